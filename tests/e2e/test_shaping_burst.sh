#!/usr/bin/env bash
# A burst of 10x the drain rate: nothing is rejected, everything is delivered exactly once, at
# no more than rate + burst in any one-second window, and the backlog is gone when the rate
# says it should be.
#
# sluice: rate = 20/s, burst = 5, spill on (fsync batch). Backend: a recording backend serving
# 1 request at a time for 40 ms (25 req/s: about what the budget lets through). Load: 400
# POSTs at 200/s (2 s, open model), each with its own X-Test-Seq.
# Checks: every answer is 200 (forwarded) or 202 (spilled, contract body and Location); the
# backend receives each seq exactly once, with the X-Sluice-Request-Id of its 202 when it was
# spilled; no 1 s window holds more than 25 deliveries; the backlog (admin API) reaches zero
# and the last delivery arrives at start + (400 - 5) / 20 = 19.75 s, within 10 %.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

RATE=20
BURST=5
COUNT=400
ARRIVALS=200

sh_backend_start --capacity 1 --service-ms 40
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base batch)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = $RATE.0; burst = $BURST;
                max_inflight = 8; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" "$RATE" "$BURST" "$COUNT" "$ARRIVALS" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rate, burst_n, count, arrivals = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
c = Checks()

poll = Poller(lambda: backlog(aport, "b"), 0.1)
poll.start()
t0 = time.time()
res = burst(port, "/orders", arrivals, count, conns=32)
t_end = time.time()
statuses = {}
for r in res:
    statuses[r["status"]] = statuses.get(r["status"], 0) + 1
log("burst of %d at %g/s took %.2fs; statuses %s" % (count, arrivals, t_end - t0, statuses))
c.check(set(statuses) <= {200, 202}, "every answer is 200 or 202 (nothing rejected)", statuses)
spilled = {}
for r in res:
    if r["status"] == 202:
        rr = Resp(202, r["headers"], r["body"].encode(), 0)
        j = check_accept_body(rr, "202 of seq %d" % r["seq"])
        spilled[r["seq"]] = j["id"]
c.check(len(spilled) >= count - 2 * burst_n - rate * (t_end - t0) - 5,
        "most of the burst was spilled (only the budget is forwarded)", len(spilled))
etas = [json.loads(r["body"])["eta_seconds"] for r in res if r["status"] == 202]
if etas:
    log("eta_seconds in the 202s: first %.2f, last %.2f (the last one should be near %.1f)"
        % (etas[0], etas[-1], (count - burst_n) / rate - (t_end - t0)))

predicted = (count - burst_n) / rate
first_send = min(r["t_send"] for r in res)
wanted = set(range(count))


def all_delivered():
    return wanted <= set(by_seq(read_log(rec_log)))


deadline = first_send + predicted * 1.5 + 10
while time.time() < deadline and not all_delivered():
    time.sleep(0.1)
# Let late duplicates show up, and the poller see the empty backlog.
time.sleep(1.5)
poll.stop()

entries = [e for e in read_log(rec_log) if e.get("seq") is not None]
seqs = by_seq(entries)
missing = sorted(wanted - set(seqs))
dups = {s: len(v) for s, v in seqs.items() if len(v) > 1}
c.check(not missing, "every request reached the backend (%d expected)" % count,
        "%d missing, e.g. %s" % (len(missing), missing[:10]))
c.check(not dups, "no request reached the backend twice", dict(list(dups.items())[:10]))
bad_status = [e for e in entries if e["status"] != 200]
c.check(not bad_status, "the backend answered every request 200", len(bad_status))

wrong_id = []
for s, rid in spilled.items():
    for e in seqs.get(s, []):
        if e["h"].get("x-sluice-request-id") != rid:
            wrong_id.append((s, rid, e["h"].get("x-sluice-request-id")))
c.check(not wrong_id, "each spilled request arrives with the X-Sluice-Request-Id of its 202",
        wrong_id[:5])

times = [e["t"] for e in entries]
most, at = windows_max(times, 1.0)
c.check(most <= rate + burst_n,
        "at most rate + burst = %d deliveries in any 1 s window" % (rate + burst_n),
        "%d in the window starting %.2fs after the first send" % (most, (at or first_send) - first_send))

if times:
    gap, at = max_gap(times)
    c.check(gap <= 0.5, "the drain never pauses (at 20/s deliveries come every 50 ms; "
            "longest pause at most 0.5 s)", "%.2fs pause %.2fs after the start" % (gap, at - first_send))
    last = max(times) - first_send
    c.check(abs(last - predicted) <= 0.1 * predicted,
            "last delivery %.2fs after the start, predicted %.2fs (+-10%%)" % (last, predicted),
            "%.2fs" % last)
    # Steady-state drain rate, away from the initial burst and the tail.
    lo, hi = first_send + 3, max(times) - 1
    mid = [t for t in times if lo <= t < hi]
    if hi > lo:
        log("steady drain rate: %.2f/s (configured %g/s)" % (len(mid) / (hi - lo), rate))

samples = [(t, v) for t, v in poll.samples if isinstance(v, int)]
c.check(samples, "the backlog is visible through the admin API or /metrics",
        [v for _, v in poll.samples[:3]])
if samples:
    peak = max(v for _, v in samples)
    log("peak backlog %d" % peak)
    c.check(peak >= len(spilled) * 0.5, "the backlog peaked near the number spilled (%d)" % len(spilled), peak)
    zero_at = None
    for t, v in samples:
        if v > 0:
            zero_at = None
        elif zero_at is None and t > t_end:
            zero_at = t
    c.check(zero_at is not None, "the backlog reached zero", samples[-3:])
    if zero_at is not None:
        z = zero_at - first_send
        c.check(abs(z - predicted) <= 0.1 * predicted,
                "backlog zero %.2fs after the start, predicted %.2fs (+-10%%)" % (z, predicted),
                "%.2fs" % z)

# The metrics agree with what the clients and the backend saw.
sm = metrics(aport)
n200 = statuses.get(200, 0)
for name, labels, want in (
        ("sluice_requests_total", {"outcome": "spilled"}, len(spilled)),
        ("sluice_requests_total", {"outcome": "forwarded"}, n200),
        ("sluice_requests_total", {"outcome": "rejected"}, 0),
        ("sluice_drained_total", {"upstream": "b", "outcome": "delivered"}, len(spilled)),
        ("sluice_drained_total", {"upstream": "b", "outcome": "dead"}, 0),
        ("sluice_queue_wait_seconds_count", {"upstream": "b"}, len(spilled)),
        ("sluice_backlog_requests", {"upstream": "b", "state": "ready"}, 0),
        ("sluice_drain_rate_limit", {"upstream": "b"}, rate)):
    got = metric(aport, name, sm, **labels)
    c.check(got is not None and abs(got - want) < 0.5, "%s%s is %g" % (name, labels, want), got)
c.done()
EOF
e2e_sluice_stop
