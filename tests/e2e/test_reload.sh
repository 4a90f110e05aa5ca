#!/usr/bin/env bash
# SIGHUP reloads the config file: a changed route takes effect, a request in
# flight finishes under the config it started with, and a broken config is
# reported as "file:line: message" while the old one keeps serving.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start
conf=$E2E_WORK/sluice.conf

# write_config ROUTES: the config with the given routes list.
write_config() {
  {
    e2e_config_base
    cat <<EOF
limits = { shutdown_timeout = "5s"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; response_timeout = "10s"; } );
routes = ( $1 );
EOF
  } >"$conf.tmp"
  mv "$conf.tmp" "$conf"
}

url() { echo "http://127.0.0.1:$SLUICE_PORT$1"; }

# v1: /a and /sleep are routed.
write_config '{ prefix = "/a"; upstream = "b"; }, { prefix = "/sleep"; upstream = "b"; }'
e2e_sluice_start "$conf"
pid=$(e2e_pid sluice)
e2e_assert_eq 200 "$(e2e_http_status "$(url /a)")" "GET /a with v1"
e2e_assert_eq 404 "$(e2e_http_status "$(url /b)")" "GET /b with v1 (no route)"

# v2 adds /b.
write_config '{ prefix = "/a"; upstream = "b"; }, { prefix = "/sleep"; upstream = "b"; },
              { prefix = "/b"; upstream = "b"; }'
e2e_signal sluice HUP
b_is_200() { [ "$(e2e_http_status "$(url /b)")" = 200 ]; }
e2e_wait_until 5 "GET /b to answer 200 after reloading v2" b_is_200
e2e_assert_eq 200 "$(e2e_http_status "$(url /a)")" "GET /a with v2"
e2e_assert_eq "$pid" "$(e2e_pid sluice)" "pid after reload"
e2e_log "ok: v2 took effect"

# A broken file (syntax error on line 6 of the file: the routes line).
{
  e2e_config_base
  cat <<EOF
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; } );
routes = ( { prefix = "/c"; upstream = ; } );
EOF
} >"$conf"
e2e_assert_eq 6 "$(grep -n '^routes' "$conf" | cut -d: -f1)" "line of the broken setting (test setup)"
e2e_signal sluice HUP
e2e_wait_log sluice err "sluice\.conf:6: " 5
sleep 0.2
e2e_alive sluice || e2e_fail "sluice exited after reloading a broken config (status $(e2e_status sluice))"
e2e_assert_eq 200 "$(e2e_http_status "$(url /a)")" "GET /a after a failed reload (old config kept)"
e2e_assert_eq 200 "$(e2e_http_status "$(url /b)")" "GET /b after a failed reload (old config kept)"
e2e_assert_eq 404 "$(e2e_http_status "$(url /c)")" "GET /c after a failed reload (broken config not used)"
e2e_log "ok: broken config rejected, old config serving"

# A request in flight when a reload removes its route completes normally.
e2e_curl -o "$E2E_WORK/inflight.body" -w '%{http_code}' "$(url /sleep/1500)" \
  >"$E2E_WORK/inflight.code" 2>"$E2E_WORK/inflight.err" &
inflight=$!
sleep 0.5
write_config '{ prefix = "/b"; upstream = "b"; }'
e2e_signal sluice HUP
a_is_404() { [ "$(e2e_http_status "$(url /a)")" = 404 ]; }
e2e_wait_until 5 "GET /a to answer 404 after reloading v4" a_is_404
kill -0 "$inflight" 2>/dev/null || e2e_fail "the request in flight ended before the reload took effect"
wait "$inflight" || e2e_fail "the request in flight during the reload failed: $(cat "$E2E_WORK/inflight.err")"
e2e_assert_eq 200 "$(cat "$E2E_WORK/inflight.code")" "status of the request in flight during the reload"
e2e_assert_eq 200 "$(e2e_http_status "$(url /b)")" "GET /b with v4"
e2e_log "ok: recovered from the broken config; request in flight completed"

e2e_sluice_stop
