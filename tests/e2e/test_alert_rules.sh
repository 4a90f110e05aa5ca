#!/usr/bin/env bash
# The Prometheus alert rules (grafana/alerts.yml) are valid and tested.
#
# Checks: "promtool check rules" accepts alerts.yml; "promtool test rules" passes every case of
# grafana/alerts_test.yml; every alert has summary, description and runbook annotations, a
# severity label and a "for", and at least one unit test where it fires and one where it does
# not (obs.py alert-tests).
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/obs_lib.sh"

obs_require promtool prometheus
obs_require_yaml

out=$E2E_WORK/promtool.out
if ! promtool check rules "$OBS_ROOT/grafana/alerts.yml" >"$out" 2>&1; then
  e2e_fail "promtool check rules grafana/alerts.yml:
$(cat "$out")"
fi
e2e_log "$(grep -E 'SUCCESS' "$out")"

# promtool resolves rule_files relative to the test file.
if ! promtool test rules "$OBS_ROOT/grafana/alerts_test.yml" >"$out" 2>&1; then
  e2e_fail "promtool test rules grafana/alerts_test.yml:
$(cat "$out")"
fi
e2e_log "promtool test rules: all $(grep -cE '^ *alertname:' "$OBS_ROOT/grafana/alerts_test.yml") alert cases pass"

python3 "$OBS_PY" alert-tests "$OBS_ROOT/grafana/alerts.yml" "$OBS_ROOT/grafana/alerts_test.yml" ||
  e2e_fail "alert rules lack annotations, labels or unit tests (see above)"
