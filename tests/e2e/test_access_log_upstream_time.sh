#!/usr/bin/env bash
# Regression test, issue 9: the access log's upstream time of a request whose upstream connect
# failed is the time that attempt took, not the host's uptime (it was computed from a start
# time that is only set once a connection exists). The upstream refuses connections: the
# request gets a 502, and its line's upstream time is small and at most the total time.
set -euo pipefail
. "$E2E_DIR/lib.sh"

port=$(e2e_free_port)
e2e_port_refuses "$port" || e2e_fail "port $port should refuse connections"
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "gone"; address = "127.0.0.1:$port"; connect_timeout = "2s"; } );
routes = ( { prefix = "/"; upstream = "gone"; } );
EOF
)
e2e_sluice_start "$conf"
e2e_assert_eq 502 "$(e2e_http_status "http://127.0.0.1:$SLUICE_PORT/refused")" "GET /refused"

has_line() { grep -q '"GET /refused ' "$E2E_WORK/sluice.out"; }
e2e_wait_until 3 "the access log line of GET /refused" has_line
line=$(grep '"GET /refused ' "$E2E_WORK/sluice.out" | head -n 1)
e2e_assert_match '" 502 [0-9]+ [0-9]+\.[0-9]{3} [0-9]+\.[0-9]{3}$' "$line" "access log line of the 502"
upstream_s=$(awk '{ print $(NF - 1) }' <<<"$line")
total_s=$(awk '{ print $NF }' <<<"$line")
awk -v u="$upstream_s" 'BEGIN { exit !(u < 1.0) }' ||
  e2e_fail "upstream time of a refused connect: expected well under 1 s, got $upstream_s s ($line)"
awk -v u="$upstream_s" -v t="$total_s" 'BEGIN { exit !(u <= t) }' ||
  e2e_fail "upstream time $upstream_s s exceeds the total time $total_s s ($line)"
e2e_sluice_stop
e2e_log "ok: upstream time of a refused connect is $upstream_s s (total $total_s s)"
