#!/usr/bin/env bash
# The web console (GET /ui) in headless Chromium: the page loads with no error, shows the
# upstream and its backlog during a burst, a pause clicked on the page stops the drain and a
# resume restarts it, a mutating call without the token fails visibly and with it succeeds,
# and dead letters are redriven and purged by filter and singly (console_check.py, over the
# DevTools protocol with cdp.py).
#
# sluice: admin.token set; upstream "orders" at 25/s, burst 5, one attempt per record (a
# replay answered 500 is a dead letter at once); the recording backend serves 8 at a time,
# 20 ms each.
#
# CONSOLE_SCREENSHOT=/abs/path.png also writes the picture shown in the README
# (docs/console.png):
#   CONSOLE_SCREENSHOT=$PWD/docs/console.png \
#     tests/e2e/run.sh tests/e2e/test_console.sh build/sluice build/sluice-demo-backend
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

# The driver needs Debian's python3-websocket, which only Debian's own python3 imports (a
# python3 earlier on PATH, from pyenv or a venv, may not see it).
console_py=
for py in python3 /usr/bin/python3; do
  if "$py" -c 'import websocket' 2>/dev/null; then
    console_py=$py
    break
  fi
done
[ -n "$console_py" ] || e2e_fail "no python3 imports websocket (Debian package python3-websocket)"

# cdp.py kills chromium's process group when the driver ends; if the driver itself was killed
# outright, chromium.pid is still there and the group goes here, by that id.
console_reap_browser() {
  local pid
  pid=$(cat "$E2E_WORK/chromium.pid" 2>/dev/null) || return 0
  kill -KILL -- "-$pid" 2>/dev/null || true
}
trap console_reap_browser EXIT

sh_backend_start --capacity 8 --service-ms 20
token=console-t0ken
conf=$(e2e_write_config sluice.conf <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; token = "$token"; };
log = { level = "info"; access = false; };
spool = { dir = "$E2E_WORK/spool"; fsync = "off"; };
upstreams = ( { name = "orders"; address = "127.0.0.1:$REC_PORT"; rate = 25.0; burst = 5;
                retry = { max_attempts = 1; }; } );
routes = ( { prefix = "/"; upstream = "orders"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

"$console_py" "$E2E_DIR/console_check.py" --port "$SLUICE_PORT" --admin-port "$SLUICE_ADMIN_PORT" \
  --token "$token" --rec-log "$REC_LOG" --workdir "$E2E_WORK" \
  ${CONSOLE_SCREENSHOT:+--screenshot "$CONSOLE_SCREENSHOT"}
e2e_sluice_stop
