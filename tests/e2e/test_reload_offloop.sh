#!/usr/bin/env bash
# A reload opens new spools off the event loop: while a spool takes its time to open, sluice
# keeps answering, and the reload completes once the spool is open.
#
# The test makes the opening of b's spool hang for as long as it likes: the spool directory
# holds a FIFO under a dictionary file's name (dict-00000001.zdict), and opening a FIFO for
# reading blocks until a writer comes. v2 adds upstream b with a spill route; after SIGHUP,
# while the open is stuck: /healthz answers within 0.5 s, a proxied request is served, and
# GET /admin/reload says a reload is running. Then the test opens the FIFO for writing (an
# empty dictionary, skipped), the reload completes, and POST /b spills (202).
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$E2E_WORK/sluice.conf
v1() {
  e2e_config_base
  cat <<EOF
upstreams = ( { name = "a"; address = "127.0.0.1:$REC_PORT"; } );
routes = ( { prefix = "/a"; upstream = "a"; spill = true; } );
EOF
}
v2() {
  e2e_config_base
  cat <<EOF
upstreams = ( { name = "a"; address = "127.0.0.1:$REC_PORT"; },
              { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; } );
routes = ( { prefix = "/a"; upstream = "a"; spill = true; },
           { prefix = "/b"; upstream = "b"; spill = true; } );
EOF
}
v1 >"$conf"
e2e_sluice_start "$conf"
sh_require_admin

fifo=$E2E_WORK/spool/b/dict-00000001.zdict
mkdir -p "$E2E_WORK/spool/b"
mkfifo "$fifo"
v2 >"$conf"
e2e_signal sluice HUP
e2e_wait_log sluice err 'SIGHUP: reloading' 5
sleep 0.5 # the threadpool is in open(2) on the FIFO by now

sh_py - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys, time
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
c = Checks()
for i in range(3):
    r = request(aport, "GET", "/healthz", timeout=2)
    c.check(r.status == 200 and r.elapsed < 0.5,
            "GET /healthz answers within 0.5 s while a spool opens", (r.status, r.elapsed, r.error))
r = get(port, "/a/x", timeout=2)
c.check(r.status == 200, "a proxied request is served while a spool opens", (r.status, r.error))
r = request(aport, "GET", "/admin/reload", timeout=2)
c.check(r.status == 200 and r.json().get("reloading") is True,
        "GET /admin/reload: a reload is running", (r.status, r.body[:200]))
c.check(get(port, "/b/x", timeout=2).status == 404, "/b is not routed before the reload is done")
c.done()
EOF

# Let the open go on: an empty dictionary file, which the spool skips.
timeout 5 sh -c ': >"$1"' sh "$fifo" || e2e_fail "nobody was reading the FIFO"
e2e_wait_log sluice err 'reloaded ' 10
rm -f "$fifo"
sh_py - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
c = Checks()
st = [post(port, "/b/%d" % i, timeout=5).status for i in range(4)]
c.check(st.count(202) >= 3, "POST /b spills once the reload is done", st)
c.done()
EOF
e2e_sluice_stop
