#!/usr/bin/env bash
# The README's "Watch it shape" walk-through, small: sluice on conf/sluice.conf (its ports and
# spool moved into the test) in front of the demo backend started as scripts/run-demo starts it,
# and scripts/demo-burst against them. The excess of the burst is answered 202 with an id and a
# status URL, the backlog drains at the configured rate (the demo's rate stays below the demo
# backend's capacity), the ETA the last 202 gave holds, every request reaches the backend once,
# and the demo backend prints no line per request unless asked with -v.
set -euo pipefail
. "$E2E_DIR/lib.sh"

root=$(cd "$E2E_DIR/../.." && pwd)
burst=400

# The demo backend as scripts/run-demo runs it.
backend_args=$(grep -o -- '--service-time [0-9a-z]* --capacity [0-9]*' "$root/scripts/run-demo") ||
  e2e_fail "scripts/run-demo does not start the demo backend with --service-time and --capacity"
# shellcheck disable=SC2086 # two options and their values
e2e_backend_start $backend_args

sed -e 's|^listen = "127.0.0.1:8080";|listen = "127.0.0.1:0";|' \
  -e 's|listen = "127.0.0.1:9464";|listen = "127.0.0.1:0";|' \
  -e "s|dir = \"./spool\";|dir = \"$E2E_WORK/spool\";|" \
  -e "s|address = \"127.0.0.1:9000\";|address = \"127.0.0.1:$BACKEND_PORT\";|" \
  "$root/conf/sluice.conf" >"$E2E_WORK/sluice.conf"
for moved in '"127.0.0.1:0";' "$E2E_WORK/spool" "127.0.0.1:$BACKEND_PORT"; do
  grep -qF -- "$moved" "$E2E_WORK/sluice.conf" || e2e_fail "conf/sluice.conf changed shape: could not set $moved"
done
rate=$(sed -n 's/^ *rate = \([0-9.]*\);.*/\1/p' "$E2E_WORK/sluice.conf" | head -n 1)
e2e_sluice_start "$E2E_WORK/sluice.conf"
admin=http://127.0.0.1:$SLUICE_ADMIN_PORT

out=$E2E_WORK/burst.out
timeout 80 "$root/scripts/demo-burst" -n "$burst" --url "http://127.0.0.1:$SLUICE_PORT/api/orders" \
  --admin "$admin" >"$out" 2>&1 || e2e_fail "demo-burst failed (exit $?):
$(cat "$out")"
e2e_log "demo-burst said:
$(cat "$out")"

# The answers: the first few forwarded live (200), the rest spilled (202), nothing else.
n200=$(sed -n 's/^ *\([0-9]*\) x 200 .*/\1/p' "$out")
n202=$(sed -n 's/^ *\([0-9]*\) x 202 .*/\1/p' "$out")
e2e_assert_eq "$burst" "$((${n200:-0} + ${n202:-0}))" "200s + 202s among the $burst answers"
e2e_assert_le "$((burst * 3 / 4))" "${n202:-0}" "spilled requests (202)"
e2e_assert_match '^  \{"id":"[0-9a-f]{32}","status":"queued","attempts":0,"position":[0-9]+,"eta_seconds":[0-9.]+\}$' \
  "$(grep -A1 'last 202:' "$out" | tail -n 1)" "the last 202's body"
e2e_assert_match 'Location: /_sluice/requests/[0-9a-f]{32}$' "$(grep 'last 202:' "$out")" "the last 202's status URL"

# The backlog: it was there after the burst, and fell at the configured rate.
rows=$(grep -E '^ +[0-9.]+s +[0-9]+ +[0-9]+ ' "$out")
first_ready=$(head -n 1 <<<"$rows" | awk '{ print $2 }')
e2e_assert_le 50 "$first_ready" "ready records a second after the burst"
e2e_assert_match 'flowing$' "$(tail -n 1 <<<"$rows")" "state of the upstream"
# Full seconds of draining (not the first row, which has no speed, nor the last, partial one).
speeds=$(sed '1d;$d' <<<"$rows" | awk '{ print $4 }')
[ -n "$speeds" ] || e2e_fail "no full second of draining to measure"
while read -r s; do
  awk -v s="$s" -v r="$rate" 'BEGIN { exit !(s >= 0.85 * r && s <= 1.15 * r) }' ||
    e2e_fail "a second of draining delivered $s requests, the rate is $rate/s: $(tr '\n' ' ' <<<"$speeds")"
done <<<"$speeds"

# The ETA held: the backlog was gone when the last 202 said, within the polling's second.
line=$(grep '^drained ' "$out") || e2e_fail "demo-burst did not see the backlog drain"
took=$(sed -n 's/.* in \([0-9.]*\) s .*/\1/p' <<<"$line")
said=$(sed -n 's/.*the last 202 said \([0-9.]*\) s.*/\1/p' <<<"$line")
awk -v t="$took" -v e="$said" 'BEGIN { exit !(t >= e - 1 && t <= e + 2) }' ||
  e2e_fail "drained in $took s, the last 202 said $said s"
awk -v t="$took" -v n="$n202" -v r="$rate" 'BEGIN { exit !(t >= n / r - 1 && t <= n / r + 2) }' ||
  e2e_fail "drained $n202 records in $took s at $rate/s"
e2e_assert_match '"status":"delivered"' "$(grep 'the last request now:' "$out")" "the last request's status"

# Every request reached the backend once: the live ones and each spilled one replayed.
m=$(e2e_curl "$admin/metrics")
e2e_assert_match "^sluice_drained_total\\{upstream=\"demo\",outcome=\"delivered\"\\} $n202\$" \
  "$(grep '^sluice_drained_total{upstream="demo",outcome="delivered"}' <<<"$m")" "replays delivered"
e2e_assert_match "^sluice_backlog_requests\\{upstream=\"demo\",state=\"ready\"\\} 0\$" \
  "$(grep '^sluice_backlog_requests{upstream="demo",state="ready"}' <<<"$m")" "ready backlog after the drain"
e2e_assert_match "\"requests\":$burst," "$(e2e_curl "http://127.0.0.1:$BACKEND_PORT/_stats")" \
  "requests the demo backend served"

# Quiet by default: the settings line at start and nothing per request; -v adds them.
e2e_assert_eq 1 "$(wc -l <"$E2E_WORK/backend.err")" "lines the demo backend logged (by default)"
e2e_backend_start -n loud --service-time 0ms --capacity 4 -v
e2e_curl -o /dev/null "http://127.0.0.1:$BACKEND_PORT/hello" || e2e_fail "GET /hello from the -v backend"
e2e_wait_until 5 "the -v backend to log GET /hello" grep -q 'GET /hello -> 200' "$E2E_WORK/loud.err"

e2e_sluice_stop
e2e_log "ok: $n200 forwarded, $n202 spilled and drained in $took s at $rate/s (ETA $said s)"
