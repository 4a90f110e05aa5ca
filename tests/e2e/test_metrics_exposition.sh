#!/usr/bin/env bash
# GET /metrics is valid Prometheus text (format 0.0.4), has no series twice, and takes its
# label values from the config only.
#
# sluice: upstream "orders" (rate 20/s, spill route /api/orders, live route /) and upstream
# "audit" (live route /audit only), in front of the demo backend.
# Load: live GETs, a burst of POSTs that spills, delayed requests, requests whose path, Host,
# method and headers look like label values ("}", quotes, newlines, other route and upstream
# names), a malformed request, status URL lookups.
# Checks, on several scrapes taken while the load runs and one after it: status 200 and
# Content-Type text/plain; version=0.0.4; "promtool check metrics" passes (its lint included);
# no series appears twice, each family has one HELP and one TYPE before its samples, which are
# in one block, and histograms are consistent (obs.py exposition); every label value is one of
# the config's route and upstream names or of a fixed set (outcome, state, code_class, kind,
# result, le, version); every per-upstream family has a series for each upstream, also for
# "audit", which no route spills to.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/obs_lib.sh"

obs_require promtool prometheus

obs_no_errexit e2e_backend_start --service-time 5ms --capacity 16
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = (
  { name = "orders"; address = "127.0.0.1:$BACKEND_PORT"; rate = 20.0; burst = 5; },
  { name = "audit"; address = "127.0.0.1:$BACKEND_PORT"; }
);
routes = (
  { prefix = "/api/orders"; upstream = "orders"; spill = true; },
  { prefix = "/audit"; upstream = "audit"; },
  { prefix = "/"; upstream = "orders"; }
);
EOF
)
obs_no_errexit e2e_sluice_start "$conf"
[ -n "${SLUICE_ADMIN_PORT:-}" ] || SLUICE_ADMIN_PORT=$(e2e_admin_port sluice)

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK" <<'PY'
import re, socket, subprocess, sys, threading, time
from obs import *

port, aport, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

reqs = []
for i in range(120):
    reqs.append(("POST", "/api/orders", {"Content-Type": "application/json"}, '{"n": %d}' % i))
    if i % 4 == 0:
        reqs.append(("GET", "/", {}, None))
    if i % 10 == 0:
        reqs.append(("GET", "/audit/x", {}, None))
# Request data that must never become a label value.
hostile = [
    ("POST", '/api/orders/%22%7D%0Aevil_total%201', {"Host": 'evil"}', "X-Route": "orders2"}, "x"),
    ("PATCH", "/api/orders/upstream=audit2", {"X-Sluice-Delay": "1s", "Idempotency-Key": 'k"}'}, "y"),
    ("GET", "/audit2/%0Asluice_requests_total%7Broute%3D%22x%22%7D%201", {"User-Agent": 'ua"}\\'}, None),
    ("DELETE", "/api/orders/7?route=zzz", {"X-Sluice-Not-Before": "1"}, None),
    ("BREW", "/coffee", {}, None),
]
load = Load(port, reqs + hostile, rate=150, conns=12)
t = threading.Thread(target=load.run)
t.start()
# A malformed request and a few status URL lookups, by hand.
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b'GET /x"} HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n')
try:
    s.recv(4096)
except OSError:
    pass
s.close()
for rid in ("0" * 32, "zz", "%22%7D"):
    http_get("http://127.0.0.1:%d/_sluice/requests/%s" % (port, rid))

allowed = {
    "route": {"/api/orders", "/audit", "/", "none"},
    "upstream": {"orders", "audit"},
    "outcome": {"forwarded", "spilled", "rejected", "error", "delivered", "retried", "dead",
                "drop"},  # drop: sluice_expired_total
    "state": {"ready", "delayed", "inflight", "dead", "closed", "half-open", "open"},
    "code_class": {"1xx", "2xx", "3xx", "4xx", "5xx"},
    "kind": {"raw", "compressed"},
    "result": {"success", "failure"},
    "cause": {"429", "503", "retry_after", "timeout", "latency"},
}


def check(body, hdrs, what):
    ctype = hdrs.get("content-type", "")
    if not re.match(r"^text/plain; ?version=0\.0\.4(; ?charset=utf-8)?$", ctype):
        fail("%s: Content-Type %r, expected text/plain; version=0.0.4" % (what, ctype))
    fams, errors = parse_exposition(body)
    for e in errors:
        fail("%s: %s" % (what, e))
    p = subprocess.run(["promtool", "check", "metrics"], input=body.encode(), capture_output=True)
    if p.returncode != 0:
        fail("%s: promtool check metrics (exit %d):\n%s%s" % (what, p.returncode,
             p.stdout.decode(), p.stderr.decode()))
    for name, fam in fams.items():
        for sname, labels, _ in fam["samples"]:
            for k, v in labels.items():
                if k == "le":
                    if not re.match(r"^(\+Inf|[0-9.e+-]+)$", v):
                        fail("%s: %s has le=%r" % (what, sname, v))
                elif k == "version":
                    if not re.match(r"^[0-9A-Za-z.+~-]+$", v):
                        fail("%s: %s has version=%r" % (what, sname, v))
                elif k not in allowed:
                    fail("%s: %s has an unexpected label %s=%r" % (what, sname, k, v))
                elif v not in allowed[k]:
                    fail("%s: %s has %s=%r, not a value from the config" % (what, sname, k, v))
    return fams


n = 0
while t.is_alive() and n < 20:
    hdrs, body = scrape(aport)
    check(body, hdrs, "scrape %d (under load)" % (n + 1))
    n += 1
    time.sleep(0.1)
t.join(60)
log("load: %s; %d scrapes under load" % (load.statuses(), n))
if n < 3:
    fail("only %d scrapes while the load ran" % n)
if load.statuses().get(202, 0) < 50:
    fail("the burst did not spill (statuses %s)" % load.statuses())
time.sleep(0.5)
hdrs, body = scrape(aport)
open(work + "/metrics.txt", "w").write(body)
fams = check(body, hdrs, "final scrape")


def ups(name):
    return {l.get("upstream") for _, l, _ in fams.get(name, {"samples": []})["samples"]}


for name, fam in sorted(fams.items()):
    if any("upstream" in l for _, l, _ in fam["samples"]) and ups(name) != {"orders", "audit"}:
        fail("%s: upstreams %s, expected orders and audit" % (name, ups(name)))
log("final scrape: %d families, %d samples" % (len(fams), sum(len(f["samples"]) for f in fams.values())))
finish()
PY
e2e_sluice_stop
