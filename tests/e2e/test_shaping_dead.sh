#!/usr/bin/env bash
# A backend that always answers 500: each spilled record is tried max_attempts times (with
# X-Sluice-Attempt 1..max), then becomes a dead letter with its last error; the admin API lists
# it; redrive (one, then all) replays dead letters once the backend is fixed, and purge drops
# one for good. 4xx other than 408/429 are final, not retried.
#
# sluice: rate = 1/s, burst = 1, upstream paused while the records are spilled, then the rate
# is raised to 50/s at run time and the upstream resumed. retry: max_attempts 3, backoff
# 100 ms doubling to 200 ms, no jitter.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --status 500
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true;
                retry = { max_attempts = 3; initial_backoff = "100ms"; max_backoff = "200ms";
                          multiplier = 2.0; jitter = 0.0; }; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" "$REC_PORT" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log, rport = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = Checks()

r = post(port, "/orders/primer")
c.check(r.status == 500, "the first POST is forwarded live and gets the backend's 500", r)
ids = {}
for i in range(1, 5):
    r = post(port, "/orders/%d" % i, {"X-Test-Seq": str(i)})
    ids[i] = check_accept_body(r, "POST %d" % i, held=True)["id"]  # paused: no ETA
r = post(port, "/orders/5", {"X-Test-Seq": "5", "X-Test-Status": "404"})
ids[5] = check_accept_body(r, "POST 5 (the backend answers it 404)", held=True)["id"]

admin(aport, "POST", "/admin/upstreams/b/rate?value=50", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
wait_for(lambda: upstream(aport, "b").get("dead") == 4, 15, "4 dead letters",
         state=lambda: (upstream(aport, "b"), [(e["path"], e["status"], e["h"].get("x-sluice-attempt"))
                                               for e in read_log(rec_log)]))
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
for i in range(1, 5):
    att = [e["h"].get("x-sluice-attempt") for e in seqs.get(i, [])]
    c.check(att == ["1", "2", "3"], "record %d was tried 3 times, attempts 1, 2, 3" % i, att)
    if len(seqs.get(i, [])) == 3:
        gaps = [b["t"] - a["t"] for a, b in zip(seqs[i], seqs[i][1:])]
        c.check(gaps[0] >= 0.09 and gaps[1] >= 0.18, "record %d backed off 100 ms, then 200 ms" % i,
                ["%.3f" % g for g in gaps])
c.check(len(seqs.get(5, [])) == 1, "a 404 is final: tried once", len(seqs.get(5, [])))
s5 = get(port, "/_sluice/requests/" + ids[5]).json()
c.check(s5.get("status") == "delivered" and s5.get("code") == 404, "the 404 counts as delivered, code 404", s5)

u = upstream(aport, "b")
c.check(u.get("dead") == 4 and u.get("ready") == 0, "admin: 4 dead, 0 ready", u)
d = admin(aport, "GET", "/admin/upstreams/b/dead", expect_status=200).json().get("dead", [])
c.check(sorted(x.get("id") for x in d) == sorted(ids[i] for i in range(1, 5)),
        "GET .../dead lists the 4 ids", [x.get("id") for x in d])
for x in d:
    c.check(x.get("attempts") == 3 and x.get("error") and x.get("method") == "POST"
            and str(x.get("target", "")).startswith("/orders/") and x.get("enqueued_at"),
            "dead letter %s has attempts 3, an error, method, target, enqueued_at" % x.get("id"), x)
s = get(port, "/_sluice/requests/" + ids[1]).json()
c.check(s.get("status") == "dead" and s.get("attempts") == 3 and s.get("error"),
        "status URL: dead, 3 attempts, with the last error", s)
sm = metrics(aport)
c.check(metric(aport, "sluice_backlog_requests", sm, upstream="b", state="dead") == 4,
        "sluice_backlog_requests{state=dead} is 4", metric(aport, "sluice_backlog_requests", sm, upstream="b", state="dead"))
c.check(metric(aport, "sluice_drained_total", sm, upstream="b", outcome="dead") == 4,
        "sluice_drained_total{outcome=dead} is 4", metric(aport, "sluice_drained_total", sm, upstream="b", outcome="dead"))
c.check((metric(aport, "sluice_drained_total", sm, upstream="b", outcome="retried") or 0) >= 8,
        "sluice_drained_total{outcome=retried} counts the 8 retries",
        metric(aport, "sluice_drained_total", sm, upstream="b", outcome="retried"))

# Fix the backend; redrive one, purge one, redrive the rest.
get(rport, "/_ctl/status/200")
r = admin(aport, "POST", "/admin/upstreams/b/dead/redrive?id=" + ids[1])
c.check(r.status == 202 and r.json() is not None, "redrive of one id answers 202 JSON", r)
wait_for(lambda: get(port, "/_sluice/requests/" + ids[1]).json().get("status") == "delivered", 5,
         "the redriven record to be delivered")
c.check(by_seq(read_log(rec_log))[1][-1]["status"] == 200, "it reached the backend again (200)", None)
c.check(upstream(aport, "b").get("dead") == 3, "3 dead left", upstream(aport, "b"))
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge?id=" + ids[2])
c.check(r.status == 202, "purge of one id answers 202", r)
wait_for(lambda: upstream(aport, "b").get("dead") == 2, 3, "2 dead left after the purge")
r = admin(aport, "POST", "/admin/upstreams/b/dead/redrive")
c.check(r.status == 202, "redrive of all answers 202", r)
wait_for(lambda: all(get(port, "/_sluice/requests/" + ids[i]).json().get("status") == "delivered"
                     for i in (3, 4)), 5, "records 3 and 4 to be delivered after redrive")
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
c.check(len(seqs.get(2, [])) == 3, "the purged record was never replayed again", len(seqs.get(2, [])))
for i in (1, 3, 4):
    c.check(len(seqs.get(i, [])) == 4 and seqs[i][-1]["h"].get("x-sluice-request-id") == ids[i],
            "record %d: 3 failed attempts, then 1 redriven delivery with the same id" % i,
            [(e["status"], e["h"].get("x-sluice-attempt")) for e in seqs.get(i, [])])
c.check(upstream(aport, "b").get("dead") == 0, "no dead letter left", upstream(aport, "b"))
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge")
c.check(r.status == 202, "purge of all (none left) answers 202", r)
c.done()
EOF
e2e_sluice_stop
