#!/usr/bin/env bash
# SIGTERM: sluice stops accepting at once, lets the request in flight finish,
# closes idle keep-alive connections and exits 0; within
# limits.shutdown_timeout even if a request is still running. SIGINT too.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start

start() { # start NAME SHUTDOWN_TIMEOUT
  {
    e2e_config_base
    cat <<EOF
limits = { shutdown_timeout = "$2"; idle_timeout = "30s"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; response_timeout = "20s"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
  } >"$E2E_WORK/$1.conf"
  e2e_sluice_start -n "$1" "$E2E_WORK/$1.conf"
}

# --- 1. A 2 s request in flight, an idle keep-alive connection, then SIGTERM.
start sluice 10s
port=$SLUICE_PORT

# The idle client: one request, then it keeps the connection open and reports
# when sluice closes it.
cat >"$E2E_WORK/idle.py" <<'EOF'
import sys
from e2e_http import *
c = Conn(int(sys.argv[1]))
c.send(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
r = c.read_response()
print("idle: got", r.status, flush=True)
t0 = now()
data, closed, secs = c.read_until_close(30)
print("idle: closed=%s after %.2fs extra=%r" % (closed, secs, data[:80]), flush=True)
EOF
e2e_spawn idle python3 "$E2E_WORK/idle.py" "$port"
e2e_wait_log idle out "idle: got 200" 5

t_req=$(e2e_now_ms)
e2e_curl -o "$E2E_WORK/inflight.body" -w '%{http_code}' "http://127.0.0.1:$port/sleep/2000" \
  >"$E2E_WORK/inflight.code" 2>"$E2E_WORK/inflight.err" &
inflight=$!
sleep 0.5
t_term=$(e2e_now_ms)
e2e_signal sluice TERM

# New connections are refused while the request is still in flight.
e2e_wait_until 1.5 "the listener to refuse connections after SIGTERM" e2e_port_refuses "$port"
kill -0 "$inflight" 2>/dev/null || e2e_fail "the request in flight ended before the listener closed"
e2e_log "ok: listener closed $(($(e2e_now_ms) - t_term)) ms after SIGTERM, request still in flight"

# The idle connection is closed promptly, without a response.
e2e_wait_log idle out "idle: closed=True" 3
e2e_assert_file_match "extra=b''" "$E2E_WORK/idle.out" "nothing sent on the idle connection at shutdown"

# The request in flight completes.
wait "$inflight" || e2e_fail "the request in flight failed: $(cat "$E2E_WORK/inflight.err")"
t_done=$(e2e_now_ms)
e2e_assert_eq 200 "$(cat "$E2E_WORK/inflight.code")" "status of the request in flight at SIGTERM"
e2e_log "ok: request in flight answered after $((t_done - t_req)) ms"

# ... and sluice exits 0 right after it.
st=$(e2e_wait_exit sluice 5) || e2e_fail "sluice still running 5 s after its last request finished"
e2e_assert_eq 0 "$st" "exit status after SIGTERM"
t_exit=$(e2e_now_ms)
e2e_log "ok: sluice exited 0, $((t_exit - t_done)) ms after the last response"

# --- 2. A request longer than shutdown_timeout: sluice exits after the timeout anyway.
start sluice2 1s
port=$SLUICE_PORT
e2e_curl -o /dev/null "http://127.0.0.1:$port/sleep/15000" >/dev/null 2>&1 &
long=$!
sleep 0.5
t_term=$(e2e_now_ms)
e2e_signal sluice2 TERM
st=$(e2e_wait_exit sluice2 6) || e2e_fail "sluice2 still running 6 s after SIGTERM with shutdown_timeout 1s"
took=$(($(e2e_now_ms) - t_term))
e2e_assert_eq 0 "$st" "exit status after SIGTERM with a request over the shutdown timeout"
e2e_assert_le "$took" 4000 "ms from SIGTERM to exit with shutdown_timeout 1s"
e2e_log "ok: sluice2 exited $took ms after SIGTERM, cutting off a request longer than shutdown_timeout"
kill "$long" 2>/dev/null || true
wait "$long" 2>/dev/null || true

# --- 3. SIGINT, idle server: graceful too.
start sluice3 5s
e2e_assert_eq 200 "$(e2e_http_status "http://127.0.0.1:$SLUICE_PORT/")" "GET / before SIGINT"
e2e_signal sluice3 INT
st=$(e2e_wait_exit sluice3 5) || e2e_fail "sluice3 still running 5 s after SIGINT"
e2e_assert_eq 0 "$st" "exit status after SIGINT"
e2e_log "ok: SIGINT"
