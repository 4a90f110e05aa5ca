#!/usr/bin/env bash
# docs/metrics.md documents exactly what sluice exposes, and says truly what uses it.
#
# sluice: one upstream with a spill route and a live route, fsync "batch" (so that the spool
# syncs), after a few live and spilled requests.
# Checks: every family of a live scrape has a section in docs/metrics.md with the same type
# and the same label names, and every documented family is in the scrape (except "up", which
# Prometheus makes); each section has Type, Labels, Meaning and Used by lines; the panels and
# alerts each "Used by" line names exist and use the series, and every dashboard panel and
# alert rule that uses a series is named on its line (obs.py docs, obs.py uses).
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/obs_lib.sh"

obs_require_yaml

obs_no_errexit e2e_backend_start --service-time 1ms --capacity 16
conf=$(e2e_write_config sluice.conf <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; };
log = { level = "info"; access = false; };
spool = { dir = "$E2E_WORK/spool"; fsync = "batch"; };
upstreams = ( { name = "orders"; address = "127.0.0.1:$BACKEND_PORT"; rate = 5.0; burst = 1; } );
routes = (
  { prefix = "/api/orders"; upstream = "orders"; spill = true; },
  { prefix = "/"; upstream = "orders"; }
);
EOF
)
obs_no_errexit e2e_sluice_start "$conf"
[ -n "${SLUICE_ADMIN_PORT:-}" ] || SLUICE_ADMIN_PORT=$(e2e_admin_port sluice)

for i in 1 2 3 4 5; do
  e2e_http_status "http://127.0.0.1:$SLUICE_PORT/api/orders" -X POST -d "n=$i" >/dev/null
  e2e_http_status "http://127.0.0.1:$SLUICE_PORT/" >/dev/null
done
obs_scrape "$SLUICE_ADMIN_PORT" "$E2E_WORK/metrics.txt"

python3 "$OBS_PY" docs "$OBS_ROOT/docs/metrics.md" "$E2E_WORK/metrics.txt" ||
  e2e_fail "docs/metrics.md and the live scrape disagree (see above)"
python3 "$OBS_PY" uses "$OBS_ROOT/docs/metrics.md" "$OBS_ROOT/grafana/sluice-dashboard.json" \
  "$OBS_ROOT/grafana/alerts.yml" ||
  e2e_fail "the Used by lines of docs/metrics.md disagree with the dashboard and the alerts (see above)"
e2e_sluice_stop
