#!/usr/bin/env bash
# The Grafana dashboard and its provisioning files are well formed, and every expression in
# the dashboard parses as PromQL.
#
# Checks: grafana/sluice-dashboard.json is importable (valid JSON, id null, no __inputs, a
# "datasource" variable that every panel and query uses, query variables job, instance and
# upstream (multi-value, All = .*), unique panel ids and titles, panels inside the 24-column
# grid without overlaps, a description on every panel), and every selector of every panel is
# filtered by $job, $instance and, for per-upstream series, $upstream (obs.py lint-dashboard);
# every panel query, annotation query and variable selector, with the variables replaced,
# goes into a rules file that "promtool check rules" must accept; the provisioning files under
# grafana/provisioning/ are YAML with the fields Grafana needs.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/obs_lib.sh"

obs_require promtool prometheus
obs_require_yaml

dash=$OBS_ROOT/grafana/sluice-dashboard.json
python3 "$OBS_PY" lint-dashboard "$dash" "$OBS_ROOT/docs/metrics.md" ||
  e2e_fail "grafana/sluice-dashboard.json does not pass the lint (see above)"

rules=$E2E_WORK/dashboard-exprs.yml
python3 "$OBS_PY" dashboard-rules "$dash" "$rules" || e2e_fail "could not extract the dashboard expressions"
out=$E2E_WORK/promtool.out
if ! promtool check rules "$rules" >"$out" 2>&1; then
  e2e_fail "a dashboard expression does not parse (promtool check rules $rules):
$(cat "$out")"
fi
e2e_log "dashboard expressions: $(grep -E 'SUCCESS' "$out" | sed 's/^ *//')"

python3 - "$OBS_ROOT/grafana/provisioning" <<'PY'
import sys, yaml
from obs import fail, finish, log
root = sys.argv[1]
ds = yaml.safe_load(open(root + "/datasources/sluice.yml"))
if ds.get("apiVersion") != 1:
    fail("datasources/sluice.yml: apiVersion must be 1")
srcs = ds.get("datasources") or []
if not any(s.get("type") == "prometheus" and s.get("url") and s.get("name") for s in srcs):
    fail("datasources/sluice.yml: no prometheus data source with a name and a url")
db = yaml.safe_load(open(root + "/dashboards/sluice.yml"))
if db.get("apiVersion") != 1:
    fail("dashboards/sluice.yml: apiVersion must be 1")
provs = db.get("providers") or []
if not any(p.get("type") == "file" and (p.get("options") or {}).get("path") for p in provs):
    fail("dashboards/sluice.yml: no file provider with options.path")
log("provisioning: %d data source(s), %d dashboard provider(s)" % (len(srcs), len(provs)))
finish()
PY
