#!/usr/bin/env bash
# sluice in front of the demo backend with real clients (curl): statuses pass
# through, bodies arrive byte-exact in both directions (5 MB, checksummed,
# Content-Length, chunked and close-delimited), many clients at once.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
limits = { max_body_bytes = "8MiB"; body_timeout = "20s"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; response_timeout = "20s"; keepalive = 16; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
)
e2e_sluice_start "$conf"
via=http://127.0.0.1:$SLUICE_PORT
direct=http://127.0.0.1:$BACKEND_PORT

# Statuses pass through unchanged.
e2e_assert_eq 200 "$(e2e_http_status "$via/")" "GET /"
e2e_assert_eq 503 "$(e2e_http_status "$via/status/503")" "GET /status/503"
e2e_assert_eq 404 "$(e2e_http_status "$via/status/404")" "GET /status/404 (the backend's 404)"
e2e_assert_eq 418 "$(e2e_http_status "$via/" -H 'X-Demo-Status: 418')" "GET / with X-Demo-Status: 418"
e2e_assert_eq 500 "$(e2e_http_status "$via/anything" -X POST --data 'x' -H 'X-Demo-Status: 500')" "POST with X-Demo-Status: 500"

# same_body PATH: the body through sluice equals the body straight from the backend.
same_body() {
  local path=$1 a b
  e2e_curl -o "$E2E_WORK/direct.body" "$direct$path" || e2e_fail "GET $path from the backend directly"
  e2e_curl -o "$E2E_WORK/via.body" "$via$path" || e2e_fail "GET $path through sluice"
  a=$(sha256sum <"$E2E_WORK/direct.body" | cut -d' ' -f1)
  b=$(sha256sum <"$E2E_WORK/via.body" | cut -d' ' -f1)
  e2e_assert_eq "$a" "$b" "sha256 of the body of GET $path through sluice vs direct ($(stat -c %s "$E2E_WORK/via.body") bytes)"
}
same_body /big/5000000
e2e_assert_eq 5000000 "$(stat -c %s "$E2E_WORK/via.body")" "size of GET /big/5000000 through sluice"
same_body /chunked
same_body /close
e2e_log "ok: bodies of /big/5000000, /chunked, /close are byte-exact"

# 5 MB of random bytes up: /echo answers with the request, body last.
head -c 5000000 /dev/urandom >"$E2E_WORK/up.bin"
code=$(e2e_curl -o "$E2E_WORK/echo.out" -w '%{http_code}' --data-binary @"$E2E_WORK/up.bin" \
  -H 'Content-Type: application/octet-stream' "$via/echo")
e2e_assert_eq 200 "$code" "POST 5 MB to /echo"
a=$(sha256sum <"$E2E_WORK/up.bin" | cut -d' ' -f1)
b=$(tail -c 5000000 "$E2E_WORK/echo.out" | sha256sum | cut -d' ' -f1)
e2e_assert_eq "$a" "$b" "sha256 of the 5 MB body the backend received (echoed back)"

# The same body chunked by the client.
code=$(e2e_curl -o "$E2E_WORK/echo2.out" -w '%{http_code}' -H 'Transfer-Encoding: chunked' \
  --data-binary @"$E2E_WORK/up.bin" "$via/echo")
e2e_assert_eq 200 "$code" "POST 5 MB chunked to /echo"
b=$(tail -c 5000000 "$E2E_WORK/echo2.out" | sha256sum | cut -d' ' -f1)
e2e_assert_eq "$a" "$b" "sha256 of the 5 MB chunked body the backend received"
e2e_log "ok: 5 MB up, Content-Length and chunked"

# 50 clients at once, 4 requests each on keep-alive connections.
pids=()
for i in $(seq 1 50); do
  curl -s --max-time 20 -w '%{http_code}\n' -o /dev/null "$via/p/$i/a" -o /dev/null "$via/p/$i/b" \
    -o /dev/null "$via/sleep/50" -o /dev/null "$via/status/201" >"$E2E_WORK/par.$i" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
total=$(cat "$E2E_WORK"/par.* | wc -l)
good=$(cat "$E2E_WORK"/par.* | grep -Ec '^(200|201)$' || true)
e2e_assert_eq 200 "$total" "responses to 50 x 4 concurrent requests"
e2e_assert_eq 200 "$good" "responses with the right status among 50 x 4 concurrent requests"
e2e_log "ok: 200 concurrent requests"

e2e_sluice_stop
