#!/usr/bin/env bash
# Requests that may not spill: over budget they wait in memory up to queue_timeout and are
# then forwarded if budget came, else answered 503 with Retry-After (whole seconds, >= 1);
# queue_timeout 0 answers 503 at once. A method that may not spill (GET) on a spill route is
# not spilled either. Nothing of this reaches the spool.
#
# sluice: rate = 2/s, burst = 1. Routes /now (spill off, queue_timeout 0), /wait (spill off,
# queue_timeout 2s), /s (spill on, every method, queue_timeout 2s: GET matches but may not
# spill, since without a methods list only POST, PUT, PATCH and DELETE may).
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 2.0; burst = 1; } );
routes = (
  { prefix = "/now"; upstream = "b"; spill = false; queue_timeout = 0; },
  { prefix = "/wait"; upstream = "b"; spill = false; queue_timeout = "2s"; },
  { prefix = "/s"; upstream = "b"; spill = true; queue_timeout = "2s"; },
  { prefix = "/"; upstream = "b"; spill = false; queue_timeout = 0; }
);
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

r = post(port, "/now/1")
c.check(r.status == 200, "the first POST takes the only token (200)", r)
r = post(port, "/now/2")
c.check(r.status == 503, "queue_timeout 0, no budget: 503 at once", r)
c.check(r.elapsed < 0.5, "at once", r.elapsed)
ra = r.header("Retry-After") or ""
c.check(ra.isdigit() and int(ra) >= 1, "503 with Retry-After in whole seconds, >= 1", ra)

time.sleep(0.6)  # one token back
r = post(port, "/wait/1")
c.check(r.status == 200, "a token was back: forwarded", r)
r = post(port, "/wait/2")
c.check(r.status == 200, "queue_timeout 2s: waits for the next token (0.5 s) and is forwarded", r)
c.check(0.2 <= r.elapsed <= 1.5, "it waited about one token interval", r.elapsed)

# A GET on a spill route: GET may not spill (default spill methods: POST PUT PATCH DELETE).
time.sleep(0.6)
r = get(port, "/s/x")
c.check(r.status == 200, "GET with budget is forwarded", r)
r = get(port, "/s/y")
c.check(r.status == 200 and 0.2 <= r.elapsed <= 1.5,
        "GET over budget on a spill route is not spilled: it waits for budget and is forwarded", r)
e = [x for x in read_log(rec_log) if x["path"] == "/s/y"]
c.check(len(e) == 1 and not e[0]["h"].get("x-sluice-request-id"), "forwarded live, not replayed",
        e and e[0]["h"])

m = metric(aport, "sluice_requests_total", outcome="spilled")
c.check(m == 0, "nothing was spilled", m)
m = metric(aport, "sluice_requests_total", outcome="rejected")
c.check(m is not None and m >= 1, "the 503s count as outcome=rejected", m)
c.check(not any(e["h"].get("x-sluice-request-id") for e in read_log(rec_log)),
        "nothing reached the backend as a replay", None)
c.done()
EOF
e2e_sluice_stop
