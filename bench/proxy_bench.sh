#!/usr/bin/env bash
# Proxy benchmark: wrk through sluice, nginx and HAProxy in front of the same backend.
#
# The backend is an nginx instance answering `return 200 "ok"`, the fastest backend at hand, so
# the figures measure the proxies. Every proxy keeps its backend connections alive. Proxies
# run pinned to CPU 0; wrk and the backend share CPU 1. The proxies take turns in rounds, so
# drift on the machine (thermal, noisy neighbours) spreads over all of them alike.
#
# Per run it records req/s, p50 and p99 latency (wrk --latency) and the proxy's CPU time per
# request (utime+stime of the proxy's processes, before and after, divided by the requests).
# It prints the median over rounds per proxy and workload, and the sluice/nginx ratios.
#
# Usage: bench/proxy_bench.sh        (from anywhere; run scripts/install-deps bench first)
# Environment:
#   ROUNDS=3 DURATION=8 (seconds per run) CONNS=50 (wrk connections) WARMUP=2 (seconds)
#   MAX_OTHER=5 TRIES=3 QUIET_WAIT=60   other work on the machine skews the figures: each run
#                         waits up to QUIET_WAIT s for the CPUs to be idle (at most MAX_OTHER %
#                         busy), and a run during which processes other than the benchmark's
#                         used more than MAX_OTHER % of the CPUs is repeated, up to TRIES times
#   SLUICE=build/sluice   the sluice binary; a sluice that does not proxy shows as n/a
#   SLUICE_BEFORE=FILE    another sluice binary (a build from before a change), run as the
#                         proxy "before" in the same rounds: a before/after pair with the peers
#   PROXIES="sluice nginx haproxy"   which proxies to run
#   RESULTS=FILE          also keep the per-run figures (tab-separated) in FILE
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
WARMUP=${WARMUP:-2}
MAX_OTHER=${MAX_OTHER:-5}
TRIES=${TRIES:-3}
QUIET_WAIT=${QUIET_WAIT:-60}
PROXIES=${PROXIES:-${SLUICE_BEFORE:+before }sluice nginx haproxy}
repo=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$repo/build/sluice}
case "$SLUICE" in /*) ;; *) SLUICE=$PWD/$SLUICE ;; esac
SLUICE_BEFORE=${SLUICE_BEFORE:-}
case "$SLUICE_BEFORE" in /* | "") ;; *) SLUICE_BEFORE=$PWD/$SLUICE_BEFORE ;; esac

for tool in wrk nginx haproxy curl taskset awk pgrep; do
  command -v "$tool" >/dev/null || { echo "proxy_bench: $tool not found (scripts/install-deps bench)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "proxy_bench: $*" >&2; }
hz=$(getconf CLK_TCK)

. "$repo/bench/lib.sh" # CPU pinning, descriptor limit, free_port

# Waits until <url> answers with a body containing "ok"; returns 1 after 5 s.
wait_ok() {
  local i
  for i in $(seq 50); do
    if curl -fsS -m 1 "$1" 2>/dev/null | grep -q ok; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Prints utime+stime in clock ticks of process <pid> and its child processes (nginx workers).
cpu_ticks() {
  local pid=$1 all total=0 p
  all="$pid $(pgrep -P "$pid" || true)"
  for p in $all; do
    if [ -r "/proc/$p/stat" ]; then
      # Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
      total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    fi
  done
  echo "$total"
}

# Prints the busy ticks of all CPUs (user, nice, system, irq, softirq, steal) from /proc/stat.
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# Prints the CPU ticks of this shell's reaped children: wrk, through the $(...) that ran it.
child_ticks() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }

# Waits, up to QUIET_WAIT seconds, for a second in which the CPUs are busy at most MAX_OTHER %:
# between runs the benchmark itself is idle, so what is busy then is other work.
wait_quiet() {
  local waited=0 b0 b1
  while [ "$waited" -lt "$QUIET_WAIT" ]; do
    b0=$(busy_ticks)
    sleep 1
    b1=$(busy_ticks)
    [ $(((b1 - b0) * 100)) -le $((MAX_OTHER * hz * $(nproc))) ] && return 0
    waited=$((waited + 1))
  done
  log "the machine stayed busy for ${QUIET_WAIT}s; measuring anyway"
}

nginx_common() {
  local dir=$1
  cat <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
EOF
}

# ---- the backend: nginx returning "ok", on CPU 1 ----
free_port
bport=$REPLY
mkdir -p "$tmp/backend"
{
  nginx_common "$tmp/backend"
  cat <<EOF
  server {
    listen 127.0.0.1:$bport backlog=4096;
    location / { return 200 "ok"; }
  }
}
EOF
} >"$tmp/backend/nginx.conf"
"${pin_load[@]}" nginx -p "$tmp/backend" -c "$tmp/backend/nginx.conf" -e "$tmp/backend/error.log" &
backend_pid=$!
pids+=("$backend_pid")
wait_ok "http://127.0.0.1:$bport/" || { log "backend nginx did not start"; cat "$tmp/backend/error.log" >&2; exit 1; }

# ---- the proxies, all on CPU 0; idle while another one is measured ----
declare -A port pid
start_nginx() {
  local dir=$tmp/nginx
  free_port
  port[nginx]=$REPLY
  mkdir -p "$dir"
  {
    nginx_common "$dir"
    cat <<EOF
  upstream backend {
    server 127.0.0.1:$bport;
    keepalive 64;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:${port[nginx]} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$dir/nginx.conf"
  "${pin_proxy[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
  pid[nginx]=$!
  pids+=("${pid[nginx]}")
}

start_haproxy() {
  local dir=$tmp/haproxy
  free_port
  port[haproxy]=$REPLY
  mkdir -p "$dir"
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:${port[haproxy]}
  default_backend be
backend be
  server b1 127.0.0.1:$bport
EOF
  "${pin_proxy[@]}" haproxy -db -f "$dir/haproxy.cfg" 2>"$dir/error.log" &
  pid[haproxy]=$!
  pids+=("${pid[haproxy]}")
}

# Runs sluice binary <bin> as proxy <name>.
start_sluice_as() {
  local name=$1 bin=$2 dir=$tmp/$1 admin
  free_port
  port[$name]=$REPLY
  free_port
  admin=$REPLY
  mkdir -p "$dir"
  cat >"$dir/sluice.conf" <<EOF
listen = "127.0.0.1:${port[$name]}"; admin = { listen = "127.0.0.1:$admin"; };
log = { level = "warn"; access = false; };
upstreams = ( { name = "backend"; address = "127.0.0.1:$bport"; keepalive = 64; } );
routes = ( { prefix = "/"; upstream = "backend"; } );
EOF
  if [ ! -x "$bin" ]; then
    log "$name: $bin not found; build it first (cmake --build build)"
    return 1
  fi
  (cd "$dir" && exec "${pin_proxy[@]}" "$bin" -c "$dir/sluice.conf") 2>"$dir/error.log" &
  pid[$name]=$!
  pids+=("${pid[$name]}")
}
start_sluice() { start_sluice_as sluice "$SLUICE"; }
start_before() { start_sluice_as before "$SLUICE_BEFORE"; }

active=()
for p in $PROXIES; do
  if "start_$p" && wait_ok "http://127.0.0.1:${port[$p]}/"; then
    active+=("$p")
  else
    log "$p does not proxy; its column shows n/a"
    sed 's/^/  /' "$tmp/$p/error.log" 2>/dev/null | tail -5 >&2 || true
  fi
done
[ "${#active[@]}" -gt 0 ] || { log "no proxy works"; exit 1; }

# The POST workload: a 1 KiB JSON body.
body=$(printf '{"id":1,"data":"%s"}' "$(printf '%*s' 1006 '' | tr ' ' x)")
[ "${#body}" -eq 1024 ] || { log "POST body is ${#body} bytes, not 1024"; exit 1; }
cat >"$tmp/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
EOF

# Converts a wrk duration ("512.00us", "1.20ms", "2.00s") to microseconds.
to_us() {
  awk -v d="$1" 'BEGIN {
    v = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    if (u == "ms") v *= 1000; else if (u == "s") v *= 1000000; else if (u == "m") v *= 60000000
    printf "%.0f", v }'
}

# Runs wrk against <proxy> with <workload> for <seconds>. Unless <round> is "warmup", appends
# to results.tsv: proxy workload round req/s p50_us p99_us cpu_us_per_req errors other_pct,
# where other_pct is the share of all CPUs that processes other than the proxy, the backend
# and wrk used meanwhile: the run's figures mean little when it is high. Such a run is
# dropped and returns 1 unless <last> is set: the caller runs it again.
run_wrk() {
  local proxy=$1 workload=$2 seconds=$3 round=$4 last=${5-1} script=() out reqs rps p50 p99 errs
  local other
  local t0 t1 k0 k1 c0 c1 b0 b1 e0 e1
  [ "$workload" = post ] && script=(-s "$tmp/post.lua")
  [ "$round" = warmup ] || wait_quiet
  e0=$EPOCHREALTIME b0=$(busy_ticks) c0=$(child_ticks) k0=$(cpu_ticks "$backend_pid") t0=$(cpu_ticks "${pid[$proxy]}")
  out=$("${pin_load[@]}" wrk -t1 -c"$CONNS" -d"${seconds}s" --latency "${script[@]}" \
    "http://127.0.0.1:${port[$proxy]}/") || true
  t1=$(cpu_ticks "${pid[$proxy]}") k1=$(cpu_ticks "$backend_pid") c1=$(child_ticks) b1=$(busy_ticks) e1=$EPOCHREALTIME
  [ "$round" = warmup ] && return 0
  other=$(awk -v t=$((b1 - b0 - (t1 - t0) - (k1 - k0) - (c1 - c0))) -v s="$(awk -v a="$e0" \
    -v b="$e1" 'BEGIN {print b - a}')" -v hz="$hz" -v n="$(nproc)" \
    'BEGIN {v = t * 100 / (s * hz * n); printf "%.0f", v < 0 ? 0 : v}')
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
              END {print n + 0}' <<<"$out")
  if [ "$other" -gt "$MAX_OTHER" ] && [ -z "$last" ]; then
    log "$proxy $workload round $round: other load ${other}% > ${MAX_OTHER}%, running it again"
    return 1
  fi
  if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
    log "$proxy $workload round $round: wrk got no answers"
    return 0
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$workload" "$round" "$rps" "$p50" \
    "$p99" "$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" \
      'BEGIN {printf "%.2f", t / hz * 1e6 / n}')" "$errs" "$other" >>"$tmp/results.tsv"
  log "$proxy $workload round $round: $rps req/s, p50 ${p50}us, p99 ${p99}us, errors $errs," \
    "other load ${other}%"
}

: >"$tmp/results.tsv"
log "backend nginx :$bport; proxies: ${active[*]}; $ROUNDS rounds x ${DURATION}s, $CONNS connections"
for p in "${active[@]}"; do
  for w in get post; do
    run_wrk "$p" "$w" "$WARMUP" warmup
  done
done
for r in $(seq "$ROUNDS"); do
  # Rotate the order each round so that no proxy always runs first.
  n=${#active[@]}
  for w in get post; do
    for i in $(seq 0 $((n - 1))); do
      for attempt in $(seq "$TRIES"); do
        last=""
        [ "$attempt" -lt "$TRIES" ] || last=1
        run_wrk "${active[$(((i + r) % n))]}" "$w" "$DURATION" "$r" "$last" && break
      done
    done
  done
done
[ -n "${RESULTS:-}" ] && cp "$tmp/results.tsv" "$RESULTS"

# ---- the table: medians over rounds ----
# Prints the runs of <proxy> and <workload> that count: those with other load within
# MAX_OTHER, or all of them when none is.
runs() {
  awk -F'\t' -v p="$1" -v w="$2" -v m="$MAX_OTHER" '$1 == p && $2 == w {
      all[++n] = $0; if ($9 <= m) clean[++k] = $0 }
    END {if (k) for (i = 1; i <= k; i++) print clean[i]; else for (i = 1; i <= n; i++) print all[i]}' \
    "$tmp/results.tsv"
}
median() { # <proxy> <workload> <column>
  runs "$1" "$2" | cut -f"$3" | sort -g | awk -v f="$([ "$3" = 7 ] && echo %.2f || echo %.0f)" '
    {v[NR] = $1}
    END {if (NR == 0) print "n/a"; else printf f "\n", (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
  if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo
echo "wrk -t1 -c$CONNS, ${DURATION}s per run, median of $ROUNDS rounds; backend: nginx return 200"
echo "other%: share of the CPUs that processes outside the benchmark used; runs: the runs the"
echo "medians are over (those with other% <= $MAX_OTHER, or all when none is)"
printf '%-5s %-8s %10s %9s %9s %12s %7s %7s %5s\n' workload proxy "req/s" "p50 us" "p99 us" \
  "CPU us/req" errors "other%" runs
for w in get post; do
  for p in before sluice nginx haproxy; do
    case " $PROXIES " in *" $p "*) ;; *) continue ;; esac
    printf '%-5s %-8s %10s %9s %9s %12s %7s %7s %5s\n' "$w" "$p" "$(median "$p" "$w" 4)" \
      "$(median "$p" "$w" 5)" "$(median "$p" "$w" 6)" "$(median "$p" "$w" 7)" \
      "$(median "$p" "$w" 8)" "$(median "$p" "$w" 9)" "$(runs "$p" "$w" | wc -l)"
  done
done
echo
for w in get post; do
  echo "$w: sluice/nginx req/s $(ratio "$(median sluice "$w" 4)" "$(median nginx "$w" 4)")," \
    "CPU/req $(ratio "$(median sluice "$w" 7)" "$(median nginx "$w" 7)")"
  case " $PROXIES " in
  *" before "*)
    echo "$w: sluice/before req/s $(ratio "$(median sluice "$w" 4)" "$(median before "$w" 4)")," \
      "CPU/req $(ratio "$(median sluice "$w" 7)" "$(median before "$w" 7)")"
    ;;
  esac
done
