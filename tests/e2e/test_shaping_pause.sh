#!/usr/bin/env bash
# Pause and resume through the admin API, the run-time rate override, and the admin token:
# a paused upstream still accepts and spills but replays nothing; resumed, it drains; the rate
# override paces the drain; /admin/* wants "Authorization: Bearer <token>", /metrics,
# /healthz and /readyz do not.
#
# sluice: rate = 20/s, burst = 2, spill on, admin.token = "t0ken".
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; token = "t0ken"; };
log = { level = "info"; access = true; };
spool = { dir = "$E2E_WORK/spool"; fsync = "off"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 20.0; burst = 2; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tok = "t0ken"
c = Checks()

for path in ("/metrics", "/healthz", "/readyz"):
    r = get(aport, path)
    c.check(r.status == 200, "GET %s needs no token" % path, r)
r = admin(aport, "GET", "/admin/upstreams")
c.check(r.status == 401, "GET /admin/upstreams without the token is a 401", r)
r = admin(aport, "GET", "/admin/upstreams", "wrong")
c.check(r.status in (401, 403), "GET /admin/upstreams with a wrong token is refused", r)
r = admin(aport, "POST", "/admin/upstreams/b/pause")
c.check(r.status == 401, "POST pause without the token is a 401", r)
u = upstream(aport, "b", tok)
c.check(u.get("paused") is False, "not paused yet (the refused pause did nothing)", u)
for k in ("name", "rate", "paused", "ready", "delayed", "inflight", "dead", "backlog_bytes", "eta_seconds"):
    c.check(k in u, "GET /admin/upstreams has %s" % k, u)
c.check(u.get("rate") == 20, "rate is the configured 20", u.get("rate"))
r = admin(aport, "POST", "/admin/upstreams/nosuch/pause", tok)
c.check(r.status == 404, "pausing an unknown upstream is a 404", r)

admin(aport, "POST", "/admin/upstreams/b/pause", tok, expect_status="2xx")
u = upstream(aport, "b", tok)
c.check(u.get("paused") is True, "paused after POST pause", u)
c.check(metric(aport, "sluice_drain_paused", upstream="b") == 1, "sluice_drain_paused{upstream=b} is 1",
        metric(aport, "sluice_drain_paused", upstream="b"))

res = burst(port, "/orders", 100, 30, conns=8)
st = sorted(set(r["status"] for r in res))
spilled = [r["seq"] for r in res if r["status"] == 202]
live = [r["seq"] for r in res if r["status"] == 200]
c.check(set(st) <= {200, 202}, "a paused upstream still accepts (200 or 202)", st)
c.check(len(spilled) >= 20, "and spills what is over budget", len(spilled))
time.sleep(1.5)
got = set(by_seq(read_log(rec_log)))
c.check(not (got & set(spilled)), "nothing is replayed while paused",
        sorted(got & set(spilled))[:10])
c.check(set(live) <= got, "what was forwarded live did reach the backend", sorted(set(live) - got)[:10])
u = upstream(aport, "b", tok)
c.check(u.get("ready") == len(spilled), "ready counts the spilled records", (u.get("ready"), len(spilled)))
c.check(isinstance(u.get("backlog_bytes"), int) and u["backlog_bytes"] > 0, "backlog_bytes > 0", u)

# Rate override: 5/s, then resume; the drain runs at 5/s.
admin(aport, "POST", "/admin/upstreams/b/rate?value=5", tok, expect_status="2xx")
u = upstream(aport, "b", tok)
c.check(u.get("rate") == 5, "rate override shows in the admin API", u.get("rate"))
c.check(metric(aport, "sluice_drain_rate_limit", upstream="b") == 5, "sluice_drain_rate_limit is 5",
        metric(aport, "sluice_drain_rate_limit", upstream="b"))
t_resume = time.time()
admin(aport, "POST", "/admin/upstreams/b/resume", tok, expect_status="2xx")
c.check(upstream(aport, "b", tok).get("paused") is False, "not paused after POST resume", None)
first = wait_for(lambda: [e for e in read_log(rec_log) if e.get("seq") in spilled], 2,
                 "the first replay within 1 s of resuming")
c.check(min(e["t"] for e in first) - t_resume <= 1.0, "replay restarts within 1 s of resume",
        min(e["t"] for e in first) - t_resume)
time.sleep(3)
n = len([e for e in read_log(rec_log) if e.get("seq") in spilled and e["t"] >= t_resume])
c.check(12 <= n <= 20, "about 5/s x 3 s (+ burst) replayed at the override rate", n)
# A high rate: the rest drains at once. (0 is refused: it would lift the limit; pause stops.)
admin(aport, "POST", "/admin/upstreams/b/rate?value=0", tok, expect_status=400)
admin(aport, "POST", "/admin/upstreams/b/rate?value=1000", tok, expect_status="2xx")
wait_for(lambda: set(spilled) <= set(by_seq(read_log(rec_log))), 5,
         "the rest to drain quickly at rate 1000")
seqs = by_seq(read_log(rec_log))
c.check(all(len(seqs[s]) == 1 for s in spilled), "each record delivered once", None)
c.done()
EOF
e2e_sluice_stop
