#!/usr/bin/env bash
# Burst benchmark: a 10x burst under open-model load against a backend that serves 500 req/s,
# through sluice (spill on), nginx limit_req (with and without nodelay) and HAProxy (maxconn +
# timeout queue), one after the other in front of the same kind of backend; and the rate at
# which sluice accepts spilled POSTs against the rate at which nginx merely proxies them.
#
# Burst: httperf, PROCS processes together sending ARRIVALS req/s for DURATION s (a new
# connection per request, 1 KiB JSON POST), to a fresh sluice-demo-backend with --capacity 10
# --service-time 20ms (about 500 req/s). A sampler records every 100 ms the backend's request
# counter and the proxy's own arrivals and backlog; after the load the script waits for the
# backlog to drain. Reported per system: accepted, rejected and delivered counts, the drain
# rate while a backlog waited (against the configured RATE), queue wait p50/p99, peak RSS;
# one plot (gnuplot) of arrivals, deliveries and backlog over time for every system.
#
# Accept rate: wrk -t1 POSTs the same 1 KiB body for ACCEPT_SECONDS, over 50 and over 400
# keep-alive connections, to sluice (paused upstream, so every request after the first
# spills; fsync batch: each 202 waits for its group fsync) and to nginx proxying to a fast
# backend (nginx return 200); the ratio of their req/s.
#
# Usage: bench/burst_bench.sh   (from anywhere; scripts/install-deps bench; a Release build)
# Environment:
#   SLUICE=build/sluice BACKEND=build/sluice-demo-backend   the binaries
#   RATE=500 ARRIVALS=5000 DURATION=10   drain rate (sluice rate, nginx limit_req rate), burst
#   CAPACITY=10 SERVICE=20ms              the demo backend (capacity x 1/service = 500 req/s)
#   PROCS=12                              httperf processes (each holds at most 1024 connections)
#   DRAIN_MAX=180                         longest wait for a backlog to drain, seconds
#   SYSTEMS="sluice nginx nginx-nodelay haproxy"   which systems to run
#   ACCEPT_SECONDS=5                      0 skips the accept-rate comparison
#   ACCEPT_CONNS="50 400"                 wrk connection counts of the accept-rate comparison
#   ACCEPT_ROUNDS=3                       rounds (nginx, then sluice) per count; medians reported
#   OUT=bench/burst.png                   the plot
#   RESULTS=DIR                           keep the raw data (samples, httperf outputs, logs)
set -euo pipefail

RATE=${RATE:-500}
ARRIVALS=${ARRIVALS:-5000}
DURATION=${DURATION:-10}
CAPACITY=${CAPACITY:-10}
SERVICE=${SERVICE:-20ms}
PROCS=${PROCS:-12}
DRAIN_MAX=${DRAIN_MAX:-180}
SYSTEMS=${SYSTEMS-sluice nginx nginx-nodelay haproxy}
ACCEPT_SECONDS=${ACCEPT_SECONDS:-5}
ACCEPT_CONNS=${ACCEPT_CONNS:-50 400}
ACCEPT_ROUNDS=${ACCEPT_ROUNDS:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$repo/build/sluice}
BACKEND=${BACKEND:-$repo/build/sluice-demo-backend}
OUT=${OUT:-$repo/bench/burst.png}
case "$SLUICE" in /*) ;; *) SLUICE=$PWD/$SLUICE ;; esac
case "$BACKEND" in /*) ;; *) BACKEND=$PWD/$BACKEND ;; esac
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
tool=$repo/bench/burst_tool.py

for t in httperf wrk nginx haproxy gnuplot python3 curl taskset awk; do
  command -v "$t" >/dev/null || { echo "burst_bench: $t not found (scripts/install-deps bench)" >&2; exit 1; }
done
[ -x "$BACKEND" ] || { echo "burst_bench: no backend binary $BACKEND (build first)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-burst.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${RESULTS:-}" ]; then
    mkdir -p "$RESULTS" && cp -r "$tmp"/. "$RESULTS"/
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "burst_bench: $*" >&2; }

. "$repo/bench/lib.sh" # CPU pinning, descriptor limit, free_port

# stop PID: SIGTERM and wait.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Peak RSS (VmHWM, KiB) of process PID plus its children (nginx workers).
peak_rss() {
  local total=0 p v
  for p in "$1" $(pgrep -P "$1" || true); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

body=$(printf '{"id":1,"data":"%s"}' "$(printf '%*s' 1006 '' | tr ' ' x)")
[ "${#body}" -eq 1024 ] || { log "POST body is ${#body} bytes, not 1024"; exit 1; }
printf "/orders method=POST contents='%s'\n" "$body" >"$tmp/session"
cat >"$tmp/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
EOF

nginx_common() { # DIR
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile 19000;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 18000; }
http {
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 10000000;
EOF
}

# ---- the systems: start_<kind> DIR BACKEND_PORT sets PORT, STATS (the port the sampler
# reads) and PID ----
start_sluice() {
  local dir=$1 bport=$2
  [ -x "$SLUICE" ] || { log "sluice: no binary $SLUICE"; return 1; }
  free_port; PORT=$REPLY
  free_port; STATS=$REPLY
  cat >"$dir/sluice.conf" <<EOF
listen = "127.0.0.1:$PORT";
admin = { listen = "127.0.0.1:$STATS"; };
log = { level = "warn"; access = false; };
limits = { max_connections = 18000; };
spool = { dir = "$dir/spool"; fsync = "batch"; };
upstreams = ( { name = "backend"; address = "127.0.0.1:$bport"; rate = $RATE.0; burst = $CAPACITY;
                max_inflight = 64; keepalive = 64; max_spool_bytes = "4GiB"; } );
routes = ( { prefix = "/"; upstream = "backend"; spill = true; } );
EOF
  (cd "$dir" && exec "${pin_proxy[@]}" "$SLUICE" -c "$dir/sluice.conf") 2>"$dir/error.log" &
  PID=$!
}

start_nginx_common() { # DIR BACKEND_PORT NODELAY
  local dir=$1 bport=$2
  free_port; PORT=$REPLY
  STATS=$PORT
  {
    nginx_common "$dir"
    cat <<EOF
  log_format q '\$status \$request_time \$upstream_response_time';
  access_log $dir/access.log q buffer=256k flush=1s;
  limit_req_zone \$server_port zone=one:1m rate=${RATE}r/s;
  limit_req_status 503;
  upstream backend {
    server 127.0.0.1:$bport;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location / {
      limit_req zone=one burst=1000 $3;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = /stub_status { stub_status; access_log off; }
  }
}
EOF
  } >"$dir/nginx.conf"
  "${pin_proxy[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
  PID=$!
}
start_nginx() { start_nginx_common "$1" "$2" ""; }
start_nginx-nodelay() { start_nginx_common "$1" "$2" nodelay; }

start_haproxy() {
  local dir=$1 bport=$2
  free_port; PORT=$REPLY
  free_port; STATS=$REPLY
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
  log stdout format raw local0
defaults
  mode http
  log global
  log-format "%ST %Tw"
  maxconn 9000
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout queue 1s
  http-reuse always
frontend fe
  bind 127.0.0.1:$PORT
  default_backend be
backend be
  server b1 127.0.0.1:$bport maxconn $CAPACITY
listen stats
  bind 127.0.0.1:$STATS
  no log
  stats enable
  stats uri /stats
EOF
  "${pin_proxy[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$dir/access.log" 2>"$dir/error.log" &
  PID=$!
}

# run_burst SYSTEM: one burst through SYSTEM; leaves $tmp/SYSTEM.json.
run_burst() {
  local s=$1 kind dir bport bpid ppid spid hpids=() i per n st
  kind=$s
  dir=$tmp/$s
  mkdir -p "$dir"
  free_port; bport=$REPLY
  "${pin_proxy[@]}" "$BACKEND" --listen "127.0.0.1:$bport" --capacity "$CAPACITY" \
    --service-time "$SERVICE" --queue 1000000 --quiet >"$dir/backend.log" 2>&1 &
  bpid=$!
  pids+=("$bpid")
  wait_port "$bport" || { log "$s: the backend did not start"; return 1; }
  if ! "start_$kind" "$dir" "$bport"; then
    stop "$bpid"
    return 1
  fi
  ppid=$PID
  pids+=("$ppid")
  if ! wait_port "$PORT" || ! wait_port "$STATS"; then
    log "$s: did not start"; tail -5 "$dir/error.log" >&2
    stop "$ppid"; stop "$bpid"
    return 1
  fi
  case $kind in nginx*) kind=nginx ;; esac
  rm -f "$dir/stop"
  "${pin_load[@]}" python3 "$tool" sample --out "$tmp/$s.samples" --stop "$dir/stop" \
    --backend "$bport" --kind "$kind" --stats "$STATS" &
  spid=$!
  pids+=("$spid")
  sleep 1
  per=$(awk -v a="$ARRIVALS" -v p="$PROCS" 'BEGIN {printf "%.3f", a / p}')
  n=$((ARRIVALS * DURATION / PROCS))
  log "$s: $PROCS x httperf --rate $per for ${DURATION}s (POST 1 KiB) on :$PORT"
  date +%s.%N >"$tmp/$s.t0"
  for i in $(seq "$PROCS"); do
    "${pin_load[@]}" httperf --server 127.0.0.1 --port "$PORT" --wsesslog="$n,0,$tmp/session" \
      --rate "$per" --timeout 60 --add-header 'Content-Type: application/json\n' \
      >"$tmp/$s.httperf.$i" 2>&1 &
    hpids+=($!)
  done
  for i in "${hpids[@]}"; do wait "$i" || true; done
  log "$s: load done; waiting (at most ${DRAIN_MAX}s) for the backlog to drain"
  st=0
  python3 "$tool" wait-drained --samples "$tmp/$s.samples" --timeout "$DRAIN_MAX" || st=$?
  [ "$st" = 0 ] || log "$s: still not drained after ${DRAIN_MAX}s"
  peak_rss "$ppid" >"$tmp/$s.rss"
  if [ "$kind" = sluice ]; then
    curl -s -m 5 "http://127.0.0.1:$STATS/metrics" >"$tmp/$s.metrics" || true
  fi
  touch "$dir/stop"
  wait "$spid" 2>/dev/null || true
  stop "$ppid"
  stop "$bpid"
  case $kind in
    nginx) awk '$1 == 200 && $3 != "-" {printf "%.3f\n", $2 - $3}' "$dir/access.log" >"$tmp/$s.qwait" ;;
    haproxy) awk '$1 == 200 && $2 >= 0 {printf "%.3f\n", $2 / 1000}' "$dir/access.log" >"$tmp/$s.qwait" ;;
  esac
  python3 "$tool" summary --dir "$tmp" --system "$s" --rate "$RATE" >"$tmp/$s.json"
  log "$s: $(cat "$tmp/$s.json")"
}

# ---- the accept-rate comparison ----
accept_rate() { # PORT CONNS: wrk req/s of the 1 KiB POST ("n/a" if wrk reported none)
  local out
  out=$("${pin_load[@]}" wrk -t1 -c"$2" -d"${ACCEPT_SECONDS}s" -s "$tmp/post.lua" "http://127.0.0.1:$1/orders") || true
  if grep -q 'Non-2xx' <<<"$out"; then
    log "accept: $(grep 'Non-2xx' <<<"$out") on :$1"
  fi
  awk '/^Requests\/sec:/ {printf "%.0f", $2; found = 1} END {if (!found) print "n/a"}' <<<"$out"
}

# median: the median of the numbers on stdin ("n/a" lines are ignored; "n/a" if none).
median() {
  grep -v 'n/a' | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2];
    else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Both proxies on CPU 0 (only the one measured is busy), the fast backend and wrk on CPU 1.
# Leaves "CONNS nginx_rps sluice_rps" lines in $tmp/accept.tsv.
run_accept() {
  local dir=$tmp/accept fport fpid np npid sport aport spid c a b r
  mkdir -p "$dir/fast" "$dir/nginx"
  free_port; fport=$REPLY
  {
    nginx_common "$dir/fast"
    cat <<EOF
  access_log off;
  server { listen 127.0.0.1:$fport backlog=4096; location / { return 200 "ok"; } }
}
EOF
  } >"$dir/fast.conf"
  "${pin_load[@]}" nginx -p "$dir/fast" -c "$dir/fast.conf" -e "$dir/fast/error.log" &
  fpid=$!
  pids+=("$fpid")
  wait_port "$fport" || { log "accept: fast backend did not start"; return 1; }
  free_port; np=$REPLY
  {
    nginx_common "$dir/nginx"
    cat <<EOF
  access_log off;
  upstream backend { server 127.0.0.1:$fport; keepalive 1024; }
  server {
    listen 127.0.0.1:$np backlog=4096;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  } >"$dir/nginx.conf"
  "${pin_proxy[@]}" nginx -p "$dir/nginx" -c "$dir/nginx.conf" -e "$dir/nginx/error.log" &
  npid=$!
  pids+=("$npid")
  wait_port "$np" || { log "accept: nginx did not start"; return 1; }
  # sluice: paused upstream, rate 1/s: every POST after the first is spilled (fsync batch).
  spid=""
  if [ -x "$SLUICE" ]; then
    free_port; sport=$REPLY
    free_port; aport=$REPLY
    cat >"$dir/sluice.conf" <<EOF
listen = "127.0.0.1:$sport";
admin = { listen = "127.0.0.1:$aport"; };
log = { level = "warn"; access = false; };
limits = { max_connections = 18000; };
spool = { dir = "$dir/spool"; fsync = "batch"; };
upstreams = ( { name = "backend"; address = "127.0.0.1:$fport"; rate = 1.0; burst = 1; paused = true;
                max_spool_bytes = "8GiB"; } );
routes = ( { prefix = "/"; upstream = "backend"; spill = true; } );
EOF
    "${pin_proxy[@]}" "$SLUICE" -c "$dir/sluice.conf" 2>"$dir/sluice.log" &
    spid=$!
    pids+=("$spid")
    wait_port "$sport" || spid=""
  fi
  : >"$tmp/accept.tsv"
  for c in $ACCEPT_CONNS; do
    : >"$dir/a" && : >"$dir/b"
    for r in $(seq "$ACCEPT_ROUNDS"); do
      a=$(accept_rate "$np" "$c")
      b=n/a
      [ -n "$spid" ] && b=$(accept_rate "$sport" "$c")
      log "accept, $c connections, round $r: nginx proxying $a req/s, sluice spilling $b req/s"
      echo "$a" >>"$dir/a"
      echo "$b" >>"$dir/b"
    done
    echo "$c $(median <"$dir/a") $(median <"$dir/b")" >>"$tmp/accept.tsv"
  done
  if [ -n "$spid" ]; then
    curl -s -m 5 "http://127.0.0.1:$aport/metrics" |
      awk '/^sluice_requests_total/ {split($0, p, "outcome=\""); split(p[2], q, "\""); n[q[1]] += $NF}
           END {printf "%d spilled, %d forwarded, %d rejected", n["spilled"], n["forwarded"], n["rejected"]}' \
        >"$tmp/accept.outcomes"
    stop "$spid"
  fi
  stop "$npid"
  stop "$fpid"
}

# ---- main ----
# What the backend serves when kept busy (wrk, 50 connections, 3 s): the ceiling of any drain.
free_port
"${pin_proxy[@]}" "$BACKEND" --listen "127.0.0.1:$REPLY" --capacity "$CAPACITY" --service-time "$SERVICE" \
  --queue 1000000 --quiet >"$tmp/calibrate.log" 2>&1 &
cpid=$!
pids+=("$cpid")
capacity_rps=n/a
if wait_port "$REPLY"; then
  capacity_rps=$("${pin_load[@]}" wrk -t1 -c50 -d3s "http://127.0.0.1:$REPLY/" |
    awk '/^Requests\/sec:/ {printf "%.1f", $2}')
fi
stop "$cpid"
log "the backend serves $capacity_rps req/s at most (capacity $CAPACITY x $SERVICE)"

ran=()
for s in $SYSTEMS; do
  if run_burst "$s"; then ran+=("$s"); else log "$s: skipped"; fi
done
if [ "$ACCEPT_SECONDS" != 0 ]; then run_accept || log "accept-rate comparison failed"; fi

if [ "${#ran[@]}" -gt 0 ]; then
  echo
  echo "## Burst: $ARRIVALS req/s for ${DURATION}s (POST 1 KiB, open model, new connection each),"
  echo "## backend: demo backend, capacity $CAPACITY x $SERVICE, serves $capacity_rps req/s at most;"
  echo "## drain rate $RATE/s (sluice rate, nginx limit_req rate; HAProxy: server maxconn $CAPACITY)"
  echo
  python3 "$tool" table --dir "$tmp" "${ran[@]}"
fi
if [ -s "$tmp/accept.tsv" ]; then
  echo
  echo "## Accept rate: wrk -t1, ${ACCEPT_SECONDS}s, POST 1 KiB; sluice spills every request (202, fsync batch)"
  echo "## sluice outcomes: $(cat "$tmp/accept.outcomes" 2>/dev/null || echo n/a)"
  echo
  echo "| connections | nginx proxying, req/s | sluice spilling, req/s | sluice / nginx |"
  echo "|---:|---:|---:|---:|"
  while read -r c a b; do
    echo "| $c | $a | $b | $(awk -v a="$b" -v b="$a" 'BEGIN {if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b}') |"
  done <"$tmp/accept.tsv"
  # Each system at the connection count where it did best: the rate it can take at all.
  awk '$2 != "n/a" && $2 > a {a = $2; ac = $1} $3 != "n/a" && $3 > b {b = $3; bc = $1}
       END {if (a > 0 && b > 0) printf "| best of each (nginx at %s, sluice at %s) | %d | %d | %.2f |\n", ac, bc, a, b, b / a}' \
    "$tmp/accept.tsv"
fi

# ---- the plot ----
if [ "${#ran[@]}" -gt 0 ]; then
  for s in "${ran[@]}"; do
    python3 - "$tmp/$s.json" >"$tmp/$s.title" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("%s: %d accepted, %d rejected, %d delivered" % (
    r["system"], r["accepted"], r["rejected"] + r["client_errors"], r["delivered"]))
EOF
  done
  xmax=$(for s in "${ran[@]}"; do awk 'END {print int($1) + 5}' "$tmp/$s.dat"; done | sort -n | tail -1)
  gnuplot -c "$repo/bench/burst_plot.gp" "$tmp" "$OUT" "${ran[*]}" "$xmax" "$RATE" "$ARRIVALS" "$DURATION"
  log "plot: $OUT"
fi
