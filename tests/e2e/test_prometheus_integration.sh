#!/usr/bin/env bash
# A real Prometheus scrapes sluice through a burst: every dashboard and alert expression works
# on what it collects, and the backlog alert fires during the burst and clears after the drain.
#
# sluice: upstream "orders" (rate 40/s, burst 5) with a spill route /api/orders (fsync batch)
# and a live route /, in front of the demo backend. Prometheus (Debian package prometheus) on
# loopback scrapes the admin listener as job "sluice" every second and evaluates
# grafana/alerts.yml every second, from a copy whose non-zero "for" are cut to 2s (the shipped
# rules keep their production durations).
# Load: one failed and one successful reload (SIGHUP), then 600 POSTs at 150/s (4 s) with live
# GETs at 10/s: about 440 records spill and drain in about 11 s.
# Checks:
#   - up{job="sluice"} is 1 before the burst;
#   - SluiceBacklogGrowing fires while the backlog still exists, and SluiceConfigReloadFailed
#     fires after the failed reload;
#   - while the backlog drains, every dashboard expression (panels, annotations, variable
#     selectors), with $job=sluice, $__rate_interval=10s, and $instance and $upstream both
#     ".*" and the real instance and upstream, runs through /api/v1/query and, for panels and
#     variables, returns at least one series; every alert expression runs, and each of its
#     selectors returns a series;
#   - once the backlog is empty, SluiceBacklogGrowing clears; no other alert than
#     SluiceConfigReloadFailed is firing at the end.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/obs_lib.sh"

obs_require prometheus prometheus
obs_require_yaml

RATE=40
obs_no_errexit e2e_backend_start --service-time 2ms --capacity 16
conf=$(e2e_write_config sluice.conf <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; };
log = { level = "info"; access = false; };
spool = { dir = "$E2E_WORK/spool"; fsync = "batch"; };
upstreams = ( { name = "orders"; address = "127.0.0.1:$BACKEND_PORT"; rate = $RATE.0; burst = 5;
                max_inflight = 16; } );
routes = (
  { prefix = "/api/orders"; upstream = "orders"; spill = true; },
  { prefix = "/"; upstream = "orders"; }
);
EOF
)
cp "$conf" "$E2E_WORK/sluice.conf.good"
obs_no_errexit e2e_sluice_start "$conf"
[ -n "${SLUICE_ADMIN_PORT:-}" ] || SLUICE_ADMIN_PORT=$(e2e_admin_port sluice)

python3 "$OBS_PY" render-alerts "$OBS_ROOT/grafana/alerts.yml" "$E2E_WORK/alerts.yml" 2s ||
  e2e_fail "could not render the alert rules"
cat >"$E2E_WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $E2E_WORK/alerts.yml
scrape_configs:
  - job_name: sluice
    static_configs:
      - targets: ['127.0.0.1:$SLUICE_ADMIN_PORT']
EOF
promtool check config "$E2E_WORK/prometheus.yml" >"$E2E_WORK/promtool.out" 2>&1 ||
  e2e_fail "promtool check config: $(cat "$E2E_WORK/promtool.out")"
obs_prometheus_start "$E2E_WORK/prometheus.yml"

up_is_1() {
  [ "$(python3 -c 'import sys; from obs import prom_value; print(prom_value(int(sys.argv[1]), "up{job=\"sluice\"}"))' "$PROM_PORT")" = 1.0 ]
}
e2e_wait_until 10 'Prometheus scrapes sluice (up{job="sluice"} == 1)' up_is_1

# A failed reload, then a good one: the reload series move, SluiceConfigReloadFailed fires.
echo 'this is not a config' >"$conf"
e2e_signal sluice HUP
reloaded() { grep -Eq "^sluice_config_reloads_total\{result=\"$1\"\} [1-9]" < <(curl -s --max-time 5 "http://127.0.0.1:$SLUICE_ADMIN_PORT/metrics"); }
e2e_wait_until 5 "a failed reload counted" reloaded failure
cp "$E2E_WORK/sluice.conf.good" "$conf"
e2e_signal sluice HUP
e2e_wait_until 5 "a successful reload counted" reloaded success

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$PROM_PORT" "$OBS_ROOT" "$RATE" <<'PY'
import sys, threading, time
from obs import *

port, aport, pport, root, rate = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                  sys.argv[4], float(sys.argv[5]))
dash_path, alerts_path = root + "/grafana/sluice-dashboard.json", root + "/grafana/alerts.yml"
instance = "127.0.0.1:%d" % aport
docs = parse_docs(root + "/docs/metrics.md")


def backlog():
    return prom_value(pport, 'sum(sluice_backlog_requests{job="sluice", state="ready"})')


# Two scrapes of the quiet proxy first, so that rate() and deriv() have a baseline.
time.sleep(2)
reqs = []
for i in range(600):
    reqs.append(("POST", "/api/orders", {"Content-Type": "application/json"}, '{"order": %d}' % i))
    if i % 15 == 0:
        reqs.append(("GET", "/", {}, None))
load = Load(port, reqs, rate=160, conns=16)
t0 = time.time()
th = threading.Thread(target=load.run)
th.start()

fired_at = None
peak = 0
deadline = t0 + 25
while time.time() < deadline:
    b = backlog()
    if b is not None:
        peak = max(peak, b)
    if firing(pport, "SluiceBacklogGrowing"):
        fired_at = time.time() - t0
        log("SluiceBacklogGrowing fires %.1fs after the burst started (backlog %s)" % (fired_at, b))
        if not b:
            fail("SluiceBacklogGrowing fired, but the backlog is already empty")
        break
    time.sleep(0.25)
th.join(30)
burst_s = time.time() - t0
log("burst: %s in %.1fs; peak backlog seen by Prometheus so far %s" % (load.statuses(), burst_s, peak))
if fired_at is None:
    fail("SluiceBacklogGrowing did not fire during the burst (peak backlog %s)" % peak)
if load.statuses().get(202, 0) < 300:
    fail("the burst did not spill as expected: %s" % load.statuses())
if not firing(pport, "SluiceConfigReloadFailed"):
    fail("SluiceConfigReloadFailed is not firing after a failed reload")

# While the backlog drains: every expression through the query API.
b = backlog()
if not b:
    fail("the backlog is already empty before the expressions are queried (%s)" % b)
exprs_checked = 0
sets = [{"job": "sluice", "instance": ".*", "upstream": ".*", "__rate_interval": "10s"},
        {"job": "sluice", "instance": instance, "upstream": "orders", "__rate_interval": "10s"}]
for values in sets:
    for where, title, expr in dashboard_exprs(load_dashboard(dash_path)):
        e = substitute(expr, default_values(values))
        ok, res = prom_query(pport, e)
        exprs_checked += 1
        if not ok:
            fail('%s "%s" (upstream=%s): query failed: %s\n  %s' % (where, title, values["upstream"], res, e))
        elif where != "annotation" and not res:
            fail('%s "%s" (upstream=%s): no data\n  %s' % (where, title, values["upstream"], e))
for r in load_alerts(alerts_path):
    ok, res = prom_query(pport, r["expr"])
    exprs_checked += 1
    if not ok:
        fail("alert %s: query failed: %s" % (r["alert"], res))
    for metric, sel in selectors_in(r["expr"]):
        ok, res = prom_query(pport, metric + sel)
        if not ok or not res:
            fail("alert %s: selector %s%s returns no data (%s)" % (r["alert"], metric, sel, res))
log("%d expressions queried while the backlog was %s" % (exprs_checked, b))

# After the drain the alert clears.
predicted = b / rate
deadline = time.time() + predicted * 1.5 + 10
while time.time() < deadline and backlog() != 0:
    time.sleep(0.25)
b = backlog()
if b != 0:
    fail("the backlog did not drain (still %s after %.0fs); GET /admin/upstreams: %s"
         % (b, predicted * 1.5 + 10, http_get("http://127.0.0.1:%d/admin/upstreams" % aport)[2]))
else:
    log("backlog drained %.1fs after the burst started" % (time.time() - t0))
deadline = time.time() + 10
while time.time() < deadline and firing(pport, "SluiceBacklogGrowing"):
    time.sleep(0.25)
if firing(pport, "SluiceBacklogGrowing"):
    fail("SluiceBacklogGrowing still fires 10s after the backlog drained")
else:
    log("SluiceBacklogGrowing cleared %.1fs after the burst started" % (time.time() - t0))
ok, res = prom_query(pport, 'ALERTS{alertstate="firing"}')
others = sorted({x["metric"]["alertname"] for x in res} - {"SluiceConfigReloadFailed"}) if ok else res
if others:
    fail("unexpected alerts firing at the end: %s" % others)
finish()
PY
e2e_stop prometheus >/dev/null
e2e_sluice_stop
