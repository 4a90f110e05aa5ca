#!/usr/bin/env bash
# Instructions per proxied request, sluice against nginx, counted by callgrind.
#
# proxy_bench.sh measures time, which a busy machine skews; this counts the instructions a
# proxy executes per request (valgrind --tool=callgrind), which stays the same whatever else
# runs, so a change to the request path can be compared before and after on any machine.
# The backend is an nginx answering `return 200 "ok"` (natively); each proxy runs under
# callgrind with one worker and keeps its backend connections alive, and wrk drives GET and
# a 1 KiB POST for DURATION seconds. The figure is (instructions of the run minus those of an
# idle start and stop) / requests answered. Under callgrind a proxy runs some 50 times slower,
# so the request counts are small, but each request takes the same path as at full speed.
#
# Usage: bench/proxy_instructions.sh   (needs valgrind, wrk, nginx, curl)
# Environment: SLUICE=build/sluice (the binary to count; another build to compare against),
#   DURATION=10 (seconds per workload), CONNS=10 (wrk connections), PROXIES="sluice nginx"
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$repo/build/sluice}
DURATION=${DURATION:-10}
CONNS=${CONNS:-10}
PROXIES=${PROXIES:-sluice nginx}

log() { echo "proxy_instructions: $*" >&2; }
for tool in valgrind callgrind_annotate wrk nginx curl; do
  command -v "$tool" >/dev/null || { log "$tool is missing (scripts/install-deps bench)"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-instr.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$repo/bench/lib.sh" # free_port, descriptor limit

# Waits until <url> answers with a body containing "ok"; returns 1 after 60 s (valgrind
# starts slowly).
wait_ok() {
  local i
  for i in $(seq 600); do
    curl -fsS -m 2 "$1" 2>/dev/null | grep -q ok && return 0
    sleep 0.1
  done
  return 1
}

nginx_conf() { # <dir> <server block>
  cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  $2
}
EOF
}

free_port
bport=$REPLY
mkdir -p "$tmp/backend"
nginx_conf "$tmp/backend" "server { listen 127.0.0.1:$bport; location / { return 200 \"ok\"; } }" \
  >"$tmp/backend/nginx.conf"
nginx -p "$tmp/backend" -c "$tmp/backend/nginx.conf" -e "$tmp/backend/error.log" &
pids+=($!)
wait_ok "http://127.0.0.1:$bport/" || { log "backend nginx did not start"; exit 1; }

body=$(printf '{"id":1,"data":"%s"}' "$(printf '%*s' 1006 '' | tr ' ' x)")
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
  "'$body'" >"$tmp/post.lua"

# Writes the config of <proxy> listening on <port> into its directory; prints its command.
proxy_cmd() {
  local proxy=$1 port=$2 dir=$tmp/$1
  mkdir -p "$dir"
  case $proxy in
  sluice)
    free_port
    cat >"$dir/sluice.conf" <<EOF
listen = "127.0.0.1:$port"; admin = { listen = "127.0.0.1:$REPLY"; };
log = { level = "warn"; access = false; };
upstreams = ( { name = "backend"; address = "127.0.0.1:$bport"; keepalive = 64; } );
routes = ( { prefix = "/"; upstream = "backend"; } );
EOF
    echo "$SLUICE -c $dir/sluice.conf"
    ;;
  nginx)
    nginx_conf "$dir" "upstream backend { server 127.0.0.1:$bport; keepalive 64; }
  server { listen 127.0.0.1:$port; location / { proxy_pass http://backend;
    proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" >"$dir/nginx.conf"
    echo "nginx -p $dir -c $dir/nginx.conf -e $dir/error.log"
    ;;
  esac
}

# Runs <proxy> under callgrind for <workload> (none, get, post); prints "requests instructions".
count() {
  local proxy=$1 workload=$2 port cmd vg out reqs=0 script=()
  free_port
  port=$REPLY
  cmd=$(proxy_cmd "$proxy" "$port")
  (cd "$tmp/$proxy" && exec valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
    $cmd) 2>"$tmp/$proxy/valgrind.log" &
  vg=$!
  pids+=("$vg")
  wait_ok "http://127.0.0.1:$port/" || { log "$proxy did not start"; tail -5 "$tmp/$proxy/valgrind.log" >&2; exit 1; }
  reqs=1 # the request that found it up
  if [ "$workload" != none ]; then
    [ "$workload" = post ] && script=(-s "$tmp/post.lua")
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "${script[@]}" "http://127.0.0.1:$port/")
    reqs=$((reqs + $(awk '/requests in/ {print $1}' <<<"$out")))
  fi
  kill -TERM "$vg"
  wait "$vg" || true
  echo "$reqs $(awk '/^(summary|totals):/ {print $2; exit}' "$tmp/cg.out")"
}

printf '%-8s %-5s %10s %14s\n' proxy work requests "instr/request"
declare -A per
for p in $PROXIES; do
  read -r n0 i0 < <(count "$p" none)
  for w in get post; do
    read -r n i < <(count "$p" "$w")
    per[$p.$w]=$(awk -v i="$i" -v i0="$i0" -v n="$n" -v n0="$n0" 'BEGIN {printf "%.0f", (i - i0) / (n - n0)}')
    printf '%-8s %-5s %10s %14s\n' "$p" "$w" "$n" "${per[$p.$w]}"
  done
done
if [ -n "${per[sluice.get]:-}" ] && [ -n "${per[nginx.get]:-}" ]; then
  for w in get post; do
    echo "$w: sluice/nginx instructions per request $(awk -v a="${per[sluice.$w]}" \
      -v b="${per[nginx.$w]}" 'BEGIN {printf "%.2f", a / b}')"
  done
fi
