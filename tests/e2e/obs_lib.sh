# shellcheck shell=bash
#
# Helpers for the observability tests (test_metrics_*.sh, test_alert_rules.sh,
# test_dashboard_exprs.sh, test_prometheus_integration.sh), sourced after lib.sh. The checks
# themselves are in obs.py (python3 obs.py COMMAND ..., or "from obs import *" in a python3
# block).

# OBS_ROOT: the repository (docs/, grafana/).
# shellcheck disable=SC2034 # used by the tests
OBS_ROOT=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck disable=SC2034 # used by the tests
OBS_PY=$E2E_DIR/obs.py

# obs_no_errexit CMD [ARGS...]: runs CMD with "set -e" off. e2e_spawn's wrapper subshell
# inherits "set -e" and would exit without recording the status of a process that fails, so
# that a crash would go unnoticed; processes are started through this.
obs_no_errexit() {
  local had=0 rc=0
  case $- in *e*) had=1 ;; esac
  set +e
  "$@"
  rc=$?
  if [ "$had" = 1 ]; then set -e; fi
  return "$rc"
}

# obs_require CMD PACKAGE: fails the test unless CMD is installed.
obs_require() {
  command -v "$1" >/dev/null 2>&1 || e2e_fail "$1 not found (Debian package $2; scripts/install-deps test)"
}

# obs_require_yaml: fails the test unless python3 can import yaml.
obs_require_yaml() {
  python3 -c 'import yaml' 2>/dev/null || e2e_fail "python3 cannot import yaml (Debian package python3-yaml)"
}

# obs_scrape PORT FILE: GET /metrics from the admin listener on PORT into FILE, its response
# headers into FILE.headers; fails unless the answer is 200.
obs_scrape() {
  local code
  code=$(curl -sS --max-time 10 -D "$2.headers" -o "$2" -w '%{http_code}' "http://127.0.0.1:$1/metrics") ||
    e2e_fail "GET /metrics on 127.0.0.1:$1 failed"
  e2e_assert_eq 200 "$code" "status of GET /metrics"
}

# obs_prometheus_start CONFIG: runs prometheus on CONFIG as "prometheus" on a free loopback
# port, with its storage in the work directory, and waits until it is ready. Sets PROM_PORT.
# A port taken between picking and binding is retried once with a new one.
obs_prometheus_start() {
  local conf=$1 attempt deadline
  for attempt in 1 2; do
    PROM_PORT=$(e2e_free_port)
    obs_no_errexit e2e_spawn prometheus prometheus --config.file="$conf" \
      --storage.tsdb.path="$E2E_WORK/prometheus-data.$attempt" \
      --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn
    e2e_expect_exit prometheus
    deadline=$(($(e2e_now_ms) + E2E_START_TIMEOUT * 1000))
    while :; do
      if [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROM_PORT/-/ready")" = 200 ]; then
        e2e_log "prometheus (pid $(e2e_pid prometheus)) ready on 127.0.0.1:$PROM_PORT"
        return 0
      fi
      if e2e_exited prometheus; then
        if [ "$attempt" = 1 ] && grep -qi 'address already in use' "$E2E_WORK/prometheus.err"; then
          e2e_log "prometheus: port $PROM_PORT was taken; retrying with another"
          continue 2
        fi
        e2e_fail "prometheus exited with status $(e2e_status prometheus); stderr:
$(tail -n 20 "$E2E_WORK/prometheus.err")"
      fi
      if [ "$(e2e_now_ms)" -ge "$deadline" ]; then
        e2e_fail "prometheus not ready within ${E2E_START_TIMEOUT}s"
      fi
      sleep 0.1
    done
  done
}
