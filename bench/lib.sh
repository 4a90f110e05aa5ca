# Shared by the benchmark scripts (sourced after they define log()).
#
# CPU pinning: the proxy under test on CPU 0, load generators and backends on CPU 1, so that
# the proxy's figures are not mixed with the load's. Sets pin_proxy and pin_load (commands to
# prefix, empty with fewer than 2 CPUs), and raises the descriptor limit as far as allowed.
if [ "$(nproc)" -ge 2 ]; then
  pin_proxy=(taskset -c 0)
  pin_load=(taskset -c 1)
else
  log "fewer than 2 CPUs: running unpinned"
  pin_proxy=()
  pin_load=()
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Sets REPLY to a loopback port that nothing listens on and that this script has not handed
# out yet (it runs in this shell, not in $(...), so that it can remember). Ports come from below
# the kernel's ephemeral range, so outgoing connections of wrk and the proxies never take them.
taken=" "
free_port() {
  while :; do
    REPLY=$((20000 + RANDOM % 12000))
    case "$taken" in *" $REPLY "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$REPLY") 2>/dev/null; then
      taken="$taken$REPLY "
      return
    fi
  done
}

# wait_port PORT [TRIES]: until something accepts connections on 127.0.0.1:PORT, polling every
# 50 ms, TRIES times (100: 5 s). Returns 1 if nothing did.
wait_port() {
  local i
  for i in $(seq "${2:-100}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# The spill benchmarks' request body: a 1 KiB JSON event.
order_body() {
  python3 -c 'import json; print(json.dumps({"event": "order.created", "pad": "x" * 980}))'
}
