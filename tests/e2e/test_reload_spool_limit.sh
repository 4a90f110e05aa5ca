#!/usr/bin/env bash
# Regression: a reload that raised max_spool_bytes changed sluice_spool_max_bytes but not the
# limit the open spool enforced, so a full spool kept answering 503 until a restart (the
# runbook of SluiceSpoolNearFull says: raise max_spool_bytes and reload).
#
# sluice: max_spool_bytes = 128KiB, upstream paused. POSTs of 4 KiB of random data until the
# first 503; then max_spool_bytes = 1MiB and SIGHUP: the next POST is spilled (202).
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$E2E_WORK/sluice.conf
write_config() {
  {
    e2e_config_base
    cat <<EOF
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true;
                max_spool_bytes = "$1"; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
  } >"$conf.tmp"
  mv "$conf.tmp" "$conf"
}
write_config 128KiB
e2e_sluice_start "$conf"
sh_require_admin

fill() {
  sh_py - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$1" <<'EOF'
import os, sys
from shaping import *
port, aport, step = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
if step == "full":
    post(port, "/orders/primer")
    for i in range(200):
        r = post(port, "/orders/%d" % i, body=os.urandom(4096))
        if r.status != 202:
            break
    c.check(r.status == 503, "the spool fills up: 503", r.status)
    c.check(metric(aport, "sluice_spool_max_bytes", upstream="b") == 128 << 10,
            "sluice_spool_max_bytes is 128 KiB", metric(aport, "sluice_spool_max_bytes", upstream="b"))
else:
    c.check(metric(aport, "sluice_spool_max_bytes", upstream="b") == 1 << 20,
            "sluice_spool_max_bytes is 1 MiB after the reload",
            metric(aport, "sluice_spool_max_bytes", upstream="b"))
    st = [post(port, "/orders/more-%d" % i, body=os.urandom(4096)).status for i in range(5)]
    c.check(st == [202] * 5, "after raising max_spool_bytes and a reload the spool takes more (202)", st)
c.done()
EOF
}
fill full
write_config 1MiB
e2e_signal sluice HUP
e2e_wait_log sluice err 'reloaded ' 10
fill raised
e2e_sluice_stop
