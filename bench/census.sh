#!/usr/bin/env bash
#
# The census after an unclean stop: how long the drains take to rebuild, from their spools,
# the statuses and Idempotency-Keys that the ledger journal may lack (docs/spool-format.md,
# "The spool record vouches for the spilled request").
#
#   bench/census.sh [SLUICE_BINARY]      (default build/sluice)
#
# A fresh spool, the upstream paused; wrk -t1 POSTs a 1 KiB JSON body with an Idempotency-Key
# over 400 keep-alive connections for SECONDS (every request spilled and answered 202); then
# kill -9 and a restart on the same spool. Reported: the records held, the spool's bytes on
# disk, and the time from the restart to the census's log line (the rebuild itself runs on the
# threadpool while sluice serves), with records/s and raw MB/s read. sluice on CPU 0, wrk on
# CPU 1.
#
# Environment: SECONDS_=10 FSYNC=batch LOSE_JOURNAL=0.
set -euo pipefail
log() { echo "census: $*" >&2; }
. "$(dirname "$0")/lib.sh"

bin=${1:-build/sluice}
SECS=${SECONDS_:-10}
FSYNC=${FSYNC:-batch}
tmp=$(mktemp -d /var/tmp/census.XXXXXX)
spid=
cleanup() {
  [ -n "$spid" ] && kill -9 "$spid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

body=$(order_body)
cat >"$tmp/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = "census-" .. tostring(n) .. "-" .. tostring(math.random(1e9))
  return wrk.format()
end
EOF

free_port; sport=$REPLY
free_port; aport=$REPLY
free_port; bport=$REPLY
cat >"$tmp/sluice.conf" <<EOF
listen = "127.0.0.1:$sport";
admin = { listen = "127.0.0.1:$aport"; };
log = { level = "info"; access = false; };
limits = { max_connections = 18000; };
spool = { dir = "$tmp/spool"; fsync = "$FSYNC"; };
upstreams = ( { name = "backend"; address = "127.0.0.1:$bport"; rate = 1.0; burst = 1; paused = true;
                max_spool_bytes = "8GiB"; } );
routes = ( { prefix = "/"; upstream = "backend"; spill = true; } );
EOF

"${pin_proxy[@]}" "$bin" -c "$tmp/sluice.conf" 2>"$tmp/first.log" &
spid=$!
wait_port "$sport" 200 || { log "sluice did not start"; exit 1; }
"${pin_load[@]}" wrk -t1 -c400 -d"${SECS}s" -s "$tmp/post.lua" "http://127.0.0.1:$sport/orders" >"$tmp/wrk.out" || true
records=$(curl -s -m 5 "http://127.0.0.1:$aport/admin/upstreams" |
  python3 -c 'import json,sys; u = json.load(sys.stdin)["upstreams"][0]; print(u.get("ready", 0) + u.get("delayed", 0))')
kill -9 "$spid"
wait "$spid" 2>/dev/null || true
spid=
bytes=$(du -sb "$tmp/spool" | cut -f1)
# LOSE_JOURNAL=1: the journal as a power cut right after its startup compaction leaves it
# (empty), so that the census rebuilds every status and key.
[ "${LOSE_JOURNAL:-0}" = 1 ] && : >"$tmp/spool/ledger.journal"

t0=$(date +%s.%N)
"${pin_proxy[@]}" "$bin" -c "$tmp/sluice.conf" 2>"$tmp/second.log" &
spid=$!
line=
for _ in $(seq 6000); do # 60 s
  line=$(grep -m1 "read after an unclean stop" "$tmp/second.log" || true)
  [ -n "$line" ] && break
  sleep 0.01
done
t1=$(date +%s.%N)
[ -n "$line" ] || { log "no census line in 60 s"; cat "$tmp/second.log" >&2; exit 1; }
log "$line"
python3 - "$records" "$bytes" "$t0" "$t1" <<'EOF'
import sys
records, disk, t0, t1 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
secs = t1 - t0
raw = records * 1100  # about 1 KiB of body and 100 bytes of head per record
print("| records held | spool on disk | restart to census done | records/s | raw MB/s |")
print("|---:|---:|---:|---:|---:|")
print("| %d | %.0f MiB | %.2f s | %.0f | %.0f |" % (records, disk / 2**20, secs, records / secs,
                                                 raw / secs / 1e6))
EOF
