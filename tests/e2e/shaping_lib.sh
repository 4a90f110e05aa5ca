# shellcheck shell=bash
#
# Helpers for the shaping end-to-end tests (test_shaping_*.sh), sourced after lib.sh:
#
#   . "$E2E_DIR/lib.sh"
#   . "$E2E_DIR/shaping_lib.sh"
#
# The tests put a recording backend (shaping.py backend: one JSON line per request it
# received, with its arrival time and headers) behind sluice, drive sluice with plain requests
# or open-model bursts (shaping.py burst), and check the outcome against the backend's log,
# the status URLs, the admin API and /metrics in python3 blocks that "from shaping import *".

# sh_backend_start [-n NAME] [ARGS...]: starts the recording backend (shaping.py backend) as
# NAME (default "rec"), logging to $E2E_WORK/NAME.jsonl, and waits until it listens. ARGS are
# shaping.py's (--port P to reuse a port, --capacity, --service-ms, --status, --retry-after).
# Sets REC_PORT and REC_LOG.
sh_backend_start() {
  local name=rec port deadline
  if [ "${1:-}" = "-n" ]; then
    name=$2
    shift 2
  fi
  e2e_spawn "$name" python3 -u "$E2E_DIR/shaping.py" backend --log "$E2E_WORK/$name.jsonl" "$@"
  deadline=$(($(e2e_now_ms) + E2E_START_TIMEOUT * 1000))
  until port=$(grep -Eo 'listening on 127\.0\.0\.1:[0-9]+' "$E2E_WORK/$name.out" 2>/dev/null |
    head -n 1 | sed 's/.*://') && [ -n "$port" ]; do
    if e2e_exited "$name"; then
      e2e_fail "$name exited with status $(e2e_status "$name") before listening; stderr:
$(cat "$E2E_WORK/$name.err")"
    fi
    if [ "$(e2e_now_ms)" -ge "$deadline" ]; then
      e2e_fail "$name did not print 'listening on 127.0.0.1:PORT' within ${E2E_START_TIMEOUT}s"
    fi
    sleep 0.05
  done
  # shellcheck disable=SC2034 # outputs, for the tests
  REC_PORT=$port
  # shellcheck disable=SC2034
  REC_LOG=$E2E_WORK/$name.jsonl
  e2e_log "$name (pid $(e2e_pid "$name")) records requests on 127.0.0.1:$port"
}

# sh_backend_stop [NAME]: stops the recording backend (its port then refuses connections).
sh_backend_stop() {
  local name=${1:-rec}
  e2e_signal "$name" KILL
  e2e_wait_exit "$name" 5 >/dev/null || e2e_fail "$name survived SIGKILL"
}

# sh_py ARGS...: python3 with the e2e modules importable (reads the script from stdin with "-").
sh_py() {
  python3 "$@"
}

# sh_require_admin: fails unless sluice logged its admin listener (SLUICE_ADMIN_PORT set).
sh_require_admin() {
  [ -n "${SLUICE_ADMIN_PORT:-}" ] || SLUICE_ADMIN_PORT=$(e2e_admin_port)
  [ -n "$SLUICE_ADMIN_PORT" ] || e2e_fail "sluice did not log its admin listener"
}

# sh_sluice_start_spilling SETTINGS: starts sluice with one upstream "b" on the recording
# backend (SETTINGS: its keys after name and address, e.g. 'rate = 20.0; paused = true;') and
# one route "/" that spills to it; sets SLUICE_PORT and SLUICE_ADMIN_PORT.
sh_sluice_start_spilling() {
  local conf
  conf=$(e2e_write_config sluice.conf <<EOF2
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; $1 } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF2
)
  e2e_sluice_start "$conf"
  sh_require_admin
}
