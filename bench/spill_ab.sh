#!/usr/bin/env bash
#
# Spill path, two sluice binaries side by side: the rate at which each accepts spilled POSTs
# (every request answered 202 once durable, fsync "batch") and then drains them, in alternating
# rounds on the same machine, so that a change to the spill or drain path is measured before
# and after in one run.
#
#   bench/spill_ab.sh BEFORE_BINARY AFTER_BINARY
#
# Per round and binary: a fresh spool; the upstream paused; wrk -t1 POSTs a 1 KiB JSON body
# over CONNS keep-alive connections for SECONDS (accept rate, req/s); then the upstream's rate
# is set to DRAIN_RATE and it is resumed against a fast backend (nginx "return 200"), and the
# records delivered in the next DRAIN_SECS give the drain rate (records/s). sluice runs on CPU 0, wrk
# and the backend on CPU 1. Also sluice's CPU time (utime + stime, all threads) per accepted
# and per delivered request, the figure that holds best on a shared machine. Prints one line
# per round and binary, then the medians.
#
# Environment: ROUNDS=5 SECONDS_=5 CONNS="50 400" DRAIN_RATE=100000 DRAIN_SECS=5 FSYNC=batch.
set -euo pipefail
log() { echo "spill_ab: $*" >&2; }
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2; exit 2; }
bins=("$1" "$2")
names=(before after)
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_:-5}
CONNS=${CONNS:-50 400}
DRAIN_RATE=${DRAIN_RATE:-100000}
DRAIN_SECS=${DRAIN_SECS:-5}
FSYNC=${FSYNC:-batch}
tmp=$(mktemp -d /var/tmp/spill_ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

body=$(order_body)
cat >"$tmp/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
EOF

mkdir -p "$tmp/fast"
free_port; fport=$REPLY
cat >"$tmp/fast.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/fast/nginx.pid;
error_log $tmp/fast/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/fast;
  proxy_temp_path $tmp/fast;
  fastcgi_temp_path $tmp/fast;
  uwsgi_temp_path $tmp/fast;
  scgi_temp_path $tmp/fast;
  server { listen 127.0.0.1:$fport backlog=4096; location / { return 200 "ok"; } }
}
EOF
"${pin_load[@]}" nginx -p "$tmp/fast" -c "$tmp/fast.conf" -e "$tmp/fast/error.log" &
pids+=($!)

wait_port "$fport" || { log "fast backend did not start"; exit 1; }

hz=$(getconf CLK_TCK)
cpu_ticks() { # PID: utime + stime of the process (all its threads), in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
per_op() { # TICKS OPS: CPU microseconds per operation
  awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN {if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a"}'
}
admin_json() { curl -s -m 5 "http://127.0.0.1:$1/admin/upstreams"; }
backlog() { # ADMIN_PORT: ready + inflight + delayed
  admin_json "$1" | python3 -c 'import json,sys
u = json.load(sys.stdin)["upstreams"][0]
print(u.get("ready", 0) + u.get("inflight", 0) + u.get("delayed", 0))'
}

: >"$tmp/results"
for c in $CONNS; do
  for r in $(seq "$ROUNDS"); do
    for i in 0 1; do
      bin=${bins[$i]}
      dir=$tmp/run
      rm -rf "$dir"
      mkdir -p "$dir"
      free_port; sport=$REPLY
      free_port; aport=$REPLY
      cat >"$dir/sluice.conf" <<EOF
listen = "127.0.0.1:$sport";
admin = { listen = "127.0.0.1:$aport"; };
log = { level = "warn"; access = false; };
limits = { max_connections = 18000; };
spool = { dir = "$dir/spool"; fsync = "$FSYNC"; };
upstreams = ( { name = "backend"; address = "127.0.0.1:$fport"; rate = 1.0; burst = 1; paused = true;
                max_inflight = 256; max_spool_bytes = "8GiB"; } );
routes = ( { prefix = "/"; upstream = "backend"; spill = true; } );
EOF
      "${pin_proxy[@]}" "$bin" -c "$dir/sluice.conf" 2>"$dir/sluice.log" &
      spid=$!
      pids+=("$spid")
      wait_port "$sport" || { log "sluice ${names[$i]} did not start"; exit 1; }
      c0=$(cpu_ticks "$spid")
      out=$("${pin_load[@]}" wrk -t1 -c"$c" -d"${SECS}s" -s "$tmp/post.lua" "http://127.0.0.1:$sport/orders") || true
      c1=$(cpu_ticks "$spid")
      acc=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
      non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
      n=$(backlog "$aport")
      curl -s -m 5 -X POST "http://127.0.0.1:$aport/admin/upstreams/backend/rate?value=$DRAIN_RATE" >/dev/null
      t0=$(date +%s.%N)
      c2=$(cpu_ticks "$spid")
      curl -s -m 5 -X POST "http://127.0.0.1:$aport/admin/upstreams/backend/resume" >/dev/null
      sleep "$DRAIN_SECS"
      left=$(backlog "$aport")
      c3=$(cpu_ticks "$spid")
      t1=$(date +%s.%N)
      acc_cpu=$(per_op $((c1 - c0)) "$n")
      drain_cpu=$(per_op $((c3 - c2)) $((n - left)))
      drain=$(awk -v n="$((n - left))" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
      load=$(cut -d' ' -f1 /proc/loadavg)
      echo "${names[$i]} $c $acc $drain $acc_cpu $drain_cpu" >>"$tmp/results"
      log "conns $c round $r ${names[$i]}: accept $acc req/s ($acc_cpu us CPU each, non-2xx ${non2xx:-0}), $n spilled; drain $drain/s ($drain_cpu us CPU each) (load $load)"
      kill "$spid"
      wait "$spid" 2>/dev/null || true
    done
  done
done

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "| conns | binary | accept req/s | sluice CPU us per accept | drain records/s | sluice CPU us per delivery |"
echo "|---|---|---:|---:|---:|---:|"
for c in $CONNS; do
  for i in 0 1; do
    col() { awk -v b="${names[$i]}" -v c="$c" -v k="$1" '$1 == b && $2 == c {print $k}' "$tmp/results" | median; }
    echo "| $c | ${names[$i]} | $(col 3) | $(col 5) | $(col 4) | $(col 6) |"
  done
done
echo "(medians of $ROUNDS rounds)"
