#!/usr/bin/env bash
# The circuit of an upstream that only live traffic uses (no spool, no drain to probe with).
#
# sluice: one upstream, one route without spill. The backend goes away: the first requests
# get 502 (connect refused) and open the circuit; then requests get 503 with Retry-After at
# once, without a connect. The backend comes back: within the probe wait (at most 3 s) one live
# request goes as the probe, gets the backend's 200 and closes the circuit, and the requests
# after it are forwarded again. A SIGHUP makes the next probe due at once.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
rport=$REC_PORT
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "l"; address = "127.0.0.1:$rport"; rate = 100.0; burst = 10;
                connect_timeout = "500ms"; } );
routes = ( { prefix = "/"; upstream = "l"; spill = false; queue_timeout = "0s"; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin
sh_backend_stop rec

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
c = Checks()
first = [get(port, "/a/%d" % i).status for i in range(3)]
c.check(first == [502, 502, 502], "connect refused: 502 for the first three", first)
u = upstream(aport, "l")
c.check(u["circuit"]["state"] == "open" and u["circuit"]["consecutive_failures"] == 3,
        "three failures one after another open the circuit", u["circuit"])
r = get(port, "/a/open")
c.check(r.status == 503 and r.header("retry-after") in ("1", "2", "3") and r.elapsed < 0.5,
        "then 503 with Retry-After (seconds to the next probe) at once", (r.status, r.header("retry-after")))
c.check(r.json() == {"error": "upstream unavailable"}, "with a JSON body", r.body)
c.done()
EOF

sh_backend_start -n rec2 --port "$rport"
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
c = Checks()
t = time.time()
seen = []


def through():
    r = get(port, "/a/back")
    seen.append(r.status)
    return r.status == 200


wait_for(through, 6, "a live request to get through once the backend is back", interval=0.1)
log("back after %.2fs; answers meanwhile: %s" % (time.time() - t, sorted(set(seen))))
c.check(time.time() - t <= 3.5, "the probe goes within the probe wait (at most 3 s)", time.time() - t)
c.check(set(seen) <= {200, 503}, "meanwhile only 503 (no connect tried but the probe)", seen)
c.check(upstream(aport, "l")["circuit"]["state"] == "closed", "the probe's 200 closed the circuit")
after = [get(port, "/a/after/%d" % i).status for i in range(5)]
c.check(after == [200] * 5, "forwarded again", after)
c.done()
EOF

# The backend goes away again; a reload makes the next probe due at once.
sh_backend_stop rec2
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
for i in range(3):
    get(port, "/b/%d" % i)
u = upstream(aport, "l")
expect(u["circuit"]["state"] == "open", "open again", u["circuit"])
m = metric(aport, "sluice_upstream_circuit_opens_total", upstream="l")
expect(m == 2, "sluice_upstream_circuit_opens_total counts two outages", m)
EOF
sh_backend_start -n rec3 --port "$rport"
e2e_signal sluice HUP
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
time.sleep(0.3)
r = get(port, "/c/after-reload")
expect(r.status == 200, "after SIGHUP the next request is the probe, at once: 200", r)
expect(upstream(aport, "l")["circuit"]["state"] == "closed", "and the circuit is closed",
       upstream(aport, "l"))
EOF
e2e_sluice_stop
