#!/usr/bin/env bash
# A backend that rate-limits with Retry-After: its first 3 requests are answered 429 with
# "Retry-After: 2". The answer to a live request holds the upstream's drain for 2 s (admin API
# hold_until, the hold-until metric); each 429 to a replay holds the whole drain again for 2 s
# (no request reaches the backend meanwhile), and the record is retried without spending an
# attempt: with retry.max_attempts = 1 every record is still delivered, every replay says
# X-Sluice-Attempt 1, and no dead letter appears. A 500 with the same Retry-After is an
# ordinary failure: with max_attempts = 1 it is dead at once. The held answers do not count
# against the circuit (the backend answered, and paced the next try).
#
# sluice: rate = 1/s, burst = 1, upstream paused while the records are spilled (the first POST
# is forwarded live), then the rate is raised to 50/s and the upstream resumed.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --first 3 --first-status 429 --retry-after 2
sh_sluice_start_spilling 'rate = 1.0; burst = 1; paused = true; retry = { max_attempts = 1; initial_backoff = "100ms"; max_backoff = "200ms"; multiplier = 2.0; jitter = 0.0; };'

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF2'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

t0 = time.time()
r = post(port, "/orders/primer")
c.check(r.status == 429 and r.header("Retry-After") == "2",
        "the first POST is forwarded live and gets the backend's 429 with Retry-After: 2", r)
u = upstream(aport, "b")
held = u.get("hold_until")
c.check(isinstance(held, str) and held.endswith("Z"), "admin: hold_until is set after the live 429", u)
hold = metric(aport, "sluice_drain_hold_until_timestamp_seconds", upstream="b") or 0
c.check(t0 + 1.5 <= hold <= time.time() + 2.5, "the hold-until metric is about 2 s ahead",
        (hold, t0))
ids = {}
for i in range(1, 5):
    r = post(port, "/orders/%d" % i, {"X-Test-Seq": str(i)})
    ids[i] = check_accept_body(r, "POST %d" % i, held=True)["id"]
r = post(port, "/orders/5", {"X-Test-Seq": "5", "X-Test-Status": "500"})
ids[5] = check_accept_body(r, "POST 5 (the backend answers it 500)", held=True)["id"]
# Past the live request's hold, so that the replays' own holds are what the log shows.
wait_for(lambda: upstream(aport, "b").get("hold_until") is None, 5, "the live hold to end")

admin(aport, "POST", "/admin/upstreams/b/rate?value=50", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
wait_for(lambda: all(get(port, "/_sluice/requests/" + ids[i]).json().get("status") == "delivered"
                     for i in range(1, 5)), 20, "records 1-4 delivered",
         state=lambda: (upstream(aport, "b"), [(e["seq"], e["status"]) for e in read_log(rec_log)]))
wait_for(lambda: upstream(aport, "b").get("dead") == 1, 5, "record 5 dead")

log = [e for e in read_log(rec_log) if e["seq"] is not None]
c.check([e["status"] for e in log[:2]] == [429, 429],
        "the replays met the backend's 2nd and 3rd answers, both 429",
        [(e["seq"], e["status"]) for e in log])
for a, b in zip(log, log[1:]):
    if a["status"] == 429:
        c.check(b["t"] - a["t"] >= 1.9, "after a 429 with Retry-After: 2 the drain waited 2 s",
                (a["seq"], b["seq"], "%.3f" % (b["t"] - a["t"])))
c.check(all(e["h"].get("x-sluice-attempt") == "1" for e in log if e["seq"] != 5),
        "every replay of records 1-4 was attempt 1: the 429s spent none",
        [(e["seq"], e["h"].get("x-sluice-attempt")) for e in log])
seqs = by_seq(log)
for i in range(1, 5):
    st = [e["status"] for e in seqs.get(i, [])]
    c.check(len(st) >= 1 and st[-1] == 200 and all(x == 429 for x in st[:-1]),
            "record %d: its 429s, then one delivery" % i, st)
c.check(sum(len(seqs.get(i, [])) for i in range(1, 5)) == 6, "records 1-4: 4 deliveries, 2 held tries",
        [(e["seq"], e["status"]) for e in log])
c.check(len(seqs.get(5, [])) == 1, "record 5 (500) tried once", len(seqs.get(5, [])))
for i in range(1, 5):
    s = get(port, "/_sluice/requests/" + ids[i]).json()
    c.check(s.get("status") == "delivered" and s.get("attempts") == 1,
            "status URL of record %d: delivered after 1 attempt" % i, s)
s5 = get(port, "/_sluice/requests/" + ids[5]).json()
c.check(s5.get("status") == "dead" and s5.get("attempts") == 1,
        "a 500 with Retry-After is an ordinary failure: dead after 1 attempt", s5)
d = admin(aport, "GET", "/admin/upstreams/b/dead", expect_status=200).json().get("dead", [])
c.check([x.get("id") for x in d] == [ids[5]], "the only dead letter is record 5",
        [x.get("id") for x in d])
sm = metrics(aport)
holds = metric(aport, "sluice_drain_backend_holds_total", sm, upstream="b")
c.check(holds == 3, "sluice_drain_backend_holds_total counts the 3 answers that held", holds)
c.check(metric(aport, "sluice_drain_hold_until_timestamp_seconds", sm, upstream="b") == 0,
        "the hold-until metric is 0 once the hold is over",
        metric(aport, "sluice_drain_hold_until_timestamp_seconds", sm, upstream="b"))
c.check(metric(aport, "sluice_drained_total", sm, upstream="b", outcome="retried") in (0, None),
        "no retry was counted for the held records",
        metric(aport, "sluice_drained_total", sm, upstream="b", outcome="retried"))
c.check(metric(aport, "sluice_upstream_circuit_opens_total", sm, upstream="b") == 0,
        "the 429s with Retry-After did not open the circuit",
        metric(aport, "sluice_upstream_circuit_opens_total", sm, upstream="b"))
c.done()
EOF2
e2e_sluice_stop
