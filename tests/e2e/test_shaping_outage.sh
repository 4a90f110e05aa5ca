#!/usr/bin/env bash
# A backend outage: retries back off (and the upstream's circuit opens, so that only one probe
# at a time goes out and an outage does not burn every record's attempts), Retry-After is
# honoured, nothing is dead-lettered early, and everything is delivered once the backend is back.
#
# sluice: rate = 20/s, burst = 5; retry: max_attempts 10, backoff 200 ms doubling to 1.6 s,
# jitter 0.2. 30 POSTs are spilled while the upstream is paused. Then:
#   1. the backend answers 503 for 3 s: the backend counts the attempts; the circuit opens and
#      probes a few times with growing gaps (a drain that retried each record on its own would
#      make ~100 attempts);
#   2. the backend answers 503 with Retry-After: 2: that record's next attempt is scheduled
#      >= 2 s later (its status URL says when) and does not come sooner;
#   3. the backend is down (connection refused) for 3 s: no dead letter;
#   4. the backend is back on the same port: every record is delivered, nothing dead.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
rport=$REC_PORT
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$rport"; rate = 20.0; burst = 5; paused = true;
                connect_timeout = "500ms";
                retry = { max_attempts = 10; initial_backoff = "200ms"; max_backoff = "1600ms";
                          multiplier = 2.0; jitter = 0.2; }; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" "$rport" "$E2E_WORK/state.json" <<'EOF'
import calendar, sys, time
from shaping import *

port, aport, rec_log, rport, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
c = Checks()
res = burst(port, "/orders", 200, 30, conns=8)
spilled = {r["seq"]: json.loads(r["body"])["id"] for r in res if r["status"] == 202}
c.check(set(r["status"] for r in res) <= {200, 202}, "all accepted", sorted(set(r["status"] for r in res)))
c.check(len(spilled) >= 20, "most spilled", len(spilled))

# 1. 503 for 3 s.
get(rport, "/_ctl/status/503")
n0 = len(read_log(rec_log))
t1 = time.time()
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
time.sleep(3)
tries = [e for e in read_log(rec_log)[n0:] if e.get("seq") in spilled]
times = [e["t"] - t1 for e in tries]
log("attempts during 3 s of 503: %d at %s" % (len(tries), ["%.2f" % t for t in times]))
# Attempts sent together (within 50 ms, e.g. up to `burst` at once) are one probe of the drain.
probes = []
for t in times:
    if not probes or t - probes[-1] > 0.05:
        probes.append(t)
log("probes of the drain at %s" % ["%.2f" % t for t in probes])
c.check(1 <= len(probes) <= 6,
        "the drain backs off as a whole: at most 6 probes in 3 s of 503 (200 ms doubling)", len(probes))
c.check(len(tries) <= 6 * 5,
        "each probe sends at most burst (5) attempts: at most 30 in 3 s (retrying every record "
        "on its own would make ~100)", len(tries))
if len(probes) >= 3:
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    c.check(all(b >= a * 0.9 for a, b in zip(gaps, gaps[1:])) and gaps[-1] >= 0.3,
            "the gaps between probes grow", ["%.2f" % g for g in gaps])
c.check(upstream(aport, "b").get("dead") == 0, "no dead letter after 3 s of 503", upstream(aport, "b"))

# 2. Retry-After: 2 (the backend logs which answers carried it).
get(rport, "/_ctl/retry-after/2")
ra = wait_for(lambda: [e for e in read_log(rec_log) if e.get("seq") in spilled and e.get("retry_after") == 2],
              4, "an attempt answered 503 with Retry-After: 2")[0]

def scheduled():
    j = get(port, "/_sluice/requests/" + spilled[ra["seq"]]).json()
    return j if j.get("not_before") else None


st = wait_for(scheduled, 3, "the status URL of the record that got Retry-After: 2 to show its next attempt")
# not_before is given to the second (rounded down).
nb = calendar.timegm(time.strptime(st["not_before"], "%Y-%m-%dT%H:%M:%SZ"))
log("after Retry-After: 2 the record is due at %s, %.2fs after the answer" % (st["not_before"], nb - ra["t"]))
c.check(nb + 1 - ra["t"] >= 1.9, "after a 503 with Retry-After: 2 the record is scheduled >= 2 s later", st)
time.sleep(max(0, ra["t"] + 2.2 - time.time()))
early = [e for e in read_log(rec_log) if e.get("seq") == ra["seq"] and ra["t"] < e["t"] < ra["t"] + 1.9]
c.check(not early, "and is not tried again sooner", ["%.2f" % (e["t"] - ra["t"]) for e in early])
get(rport, "/_ctl/retry-after/0")
save_json(state, {"spilled": spilled})
c.done()
EOF

# 3. Down: connection refused for 3 s.
sh_backend_stop rec
sleep 3
python3 - "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
u = upstream(int(sys.argv[1]), "b")
expect(u.get("dead") == 0, "no dead letter after 3 s of connection refused", u)
log("after the outage: %s" % u)
EOF

# 4. Back up on the same port.
sh_backend_start -n rec2 --port "$rport"
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/rec2.jsonl" "$E2E_WORK/state.json" <<'EOF'
import sys, time
from shaping import *
port, aport, rec_log, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = Checks()
spilled = {int(k): v for k, v in load_json(state)["spilled"].items()}
t = time.time()
wait_for(lambda: set(spilled) <= set(by_seq(read_log(rec_log))), 10,
         "every spilled record to be delivered after the backend came back")
log("all %d delivered %.2fs after the backend came back" % (len(spilled), time.time() - t))
seqs = by_seq(read_log(rec_log))
c.check(all(e["status"] == 200 for s in spilled for e in seqs[s]), "delivered with 200", None)
c.check(all(e["h"].get("x-sluice-request-id") == spilled[s] for s in spilled for e in seqs[s]),
        "with their ids", None)
wait_for(lambda: backlog(aport, "b") == 0, 5, "an empty backlog")
u = upstream(aport, "b")
c.check(u.get("dead") == 0, "nothing dead-lettered", u)
st = [get(port, "/_sluice/requests/" + i).json() for i in spilled.values()]
c.check(all(s.get("status") == "delivered" for s in st), "every status URL says delivered",
        [s for s in st if s.get("status") != "delivered"][:3])
c.check(max(s.get("attempts", 0) for s in st) <= 10, "no record used more than max_attempts",
        max(s.get("attempts", 0) for s in st))
c.done()
EOF
e2e_sluice_stop
