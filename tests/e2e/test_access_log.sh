#!/usr/bin/env bash
# The access log: one line per request on stdout (time, client, method,
# target, status, bytes, upstream time, total time), written as requests
# finish (not held in a buffer until exit); none with log.access = false.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start

config() { # config ACCESS
  cat <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; };
log = { level = "info"; access = $1; };
spool = { dir = "$E2E_WORK/spool"; fsync = "off"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; response_timeout = "5s"; } );
routes = ( { prefix = "/items"; upstream = "b"; }, { prefix = "/status"; upstream = "b"; },
           { prefix = "/echo"; upstream = "b"; } );
EOF
}

conf=$(config true | e2e_write_config on.conf)
e2e_sluice_start "$conf"
base=http://127.0.0.1:$SLUICE_PORT

e2e_assert_eq 200 "$(e2e_http_status "$base/items?page=2")" "GET /items?page=2"
e2e_assert_eq 503 "$(e2e_http_status "$base/status/503")" "GET /status/503 (backend status passed through)"
e2e_assert_eq 404 "$(e2e_http_status "$base/nowhere")" "GET /nowhere (no route)"
e2e_assert_eq 200 "$(e2e_http_status "$base/echo" --data-binary 'hello')" "POST /echo"

lines() { grep -c . "$E2E_WORK/sluice.out" 2>/dev/null || true; }
four_lines() { [ "$(lines)" -ge 4 ]; }
e2e_wait_until 3 "4 access log lines on stdout while sluice runs" four_lines
e2e_assert_eq 4 "$(lines)" "access log lines for 4 requests"

log=$E2E_WORK/sluice.out
n='(^|[^0-9])' # no digit before
e2e_assert_file_match "127\.0\.0\.1.*GET.*/items\?page=2.*${n}200([^0-9]|\$)" "$log" "access log line of GET /items?page=2"
e2e_assert_file_match "127\.0\.0\.1.*GET.*/status/503.*${n}503([^0-9]|\$)" "$log" "access log line of the 503"
e2e_assert_file_match "127\.0\.0\.1.*GET.*/nowhere.*${n}404([^0-9]|\$)" "$log" "access log line of the 404"
e2e_assert_file_match "127\.0\.0\.1.*POST.*/echo.*${n}200([^0-9]|\$)" "$log" "access log line of the POST"
# Status, bytes, upstream time, total time: at least three numbers after the status.
e2e_assert_file_match "/items\?page=2.*${n}200[^0-9]+[0-9]+[^0-9]+[0-9]+[^0-9]+[0-9]" "$log" \
  "bytes, upstream time and total time after the status"
e2e_sluice_stop

conf=$(config false | e2e_write_config off.conf)
e2e_sluice_start -n quiet "$conf"
e2e_assert_eq 200 "$(e2e_http_status "http://127.0.0.1:$SLUICE_PORT/items/x")" "GET /items/x with access = false"
e2e_assert_eq 404 "$(e2e_http_status "http://127.0.0.1:$SLUICE_PORT/none")" "GET /none with access = false"
e2e_sluice_stop quiet
if grep -q . "$E2E_WORK/quiet.out"; then
  e2e_fail "access = false, yet stdout has: $(head -n 3 "$E2E_WORK/quiet.out")"
fi
e2e_log "ok: access log on and off"
