#!/usr/bin/env bash
# The adaptive rate against a real backend: a 429 with Retry-After lowers it once (cause
# retry_after), and good fast answers raise it step by step, so that a backlog drains well
# above the starting rate, never above max_rate. Metrics (sluice_drain_rate_effective, the
# increases and the decreases by cause) and the admin API show each move.
#
# sluice: rate = 20/s to start, adaptive within [5, 200], target_latency 250 ms; the upstream
# paused while 300 records are spilled (X-Sluice-Delay: 1s, so that none goes live), then
# resumed once they are due. The backend answers its first request
# 429 with "Retry-After: 1", then 200 at once.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --first 1 --first-status 429 --retry-after 1
sh_sluice_start_spilling 'rate = 20.0; paused = true; adaptive = true; min_rate = 5.0; max_rate = 200.0; target_latency = "250ms";'

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF2'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

def rate_metrics():
    sm = metrics(aport)
    return {"effective": metric(aport, "sluice_drain_rate_effective", sm, upstream="b"),
            "limit": metric(aport, "sluice_drain_rate_limit", sm, upstream="b"),
            "increases": metric(aport, "sluice_drain_rate_increases_total", sm, upstream="b"),
            "decreases": {k: metric(aport, "sluice_drain_rate_decreases_total", sm, upstream="b",
                                    cause=k)
                          for k in ("429", "503", "retry_after", "timeout", "latency")}}

m = rate_metrics()
c.check(m["effective"] == 20 and m["limit"] == 200, "at start: effective rate 20, limit max_rate 200", m)
u = upstream(aport, "b")
c.check(u.get("rate") == 20 and (u.get("adaptive") or {}).get("min_rate") == 5
        and u["adaptive"].get("max_rate") == 200, "admin: rate 20, adaptive within [5, 200]", u)

r = post(port, "/orders/primer")
c.check(r.status == 429, "the first POST is forwarded live and gets the backend's 429", r)
m = rate_metrics()
c.check(abs(m["effective"] - 14) < 1e-9 and m["decreases"]["retry_after"] == 1,
        "a 429 with Retry-After lowers the rate once, to 70 %: 14/s, cause retry_after", m)
wait_for(lambda: upstream(aport, "b").get("hold_until") is None, 5, "the hold to end")

ids, live = [], 0
for i in range(300):
    r = post(port, "/orders/%d" % i, {"X-Test-Seq": str(i), "X-Sluice-Delay": "1s"})
    if r.status == 202:
        ids.append(r.json()["id"])
    elif r.status == 200:
        live += 1
    else:
        c.check(False, "POST %d answered 200 (live) or 202 (spilled)" % i, r)
c.check(len(ids) == 300, "the 300 delayed POSTs were spilled", (len(ids), live))
time.sleep(1.0)  # due: from here on the drain's rate alone spaces them

admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
peak, deadline = 0, time.time() + 40
while time.time() < deadline:
    m = rate_metrics()
    peak = max(peak, m["effective"])
    if upstream(aport, "b").get("ready") == 0 and upstream(aport, "b").get("inflight") == 0:
        break
    time.sleep(0.1)
wait_for(lambda: all(get(port, "/_sluice/requests/" + i).json().get("status") == "delivered"
                     for i in ids), 10, "every spilled record delivered")

replays = sorted(e["t"] for e in read_log(rec_log) if e["h"].get("x-sluice-attempt"))
c.check(len(replays) == len(ids), "each spilled record replayed once", (len(replays), len(ids)))
tail = replays[-150:]
speed = (len(tail) - 1) / (tail[-1] - tail[0]) if len(tail) > 1 and tail[-1] > tail[0] else 0
c.check(speed > 35, "the last 150 replays went well above the starting 20/s (%.0f/s)" % speed, speed)
c.check(40 < peak <= 200, "the effective rate rose past 40/s, never past max_rate (peak %.1f/s)"
        % peak, peak)
m = rate_metrics()
c.check(m["increases"] >= 5, "sluice_drain_rate_increases_total counts the steps up", m)
c.check(m["decreases"] == {"429": 0, "503": 0, "retry_after": 1, "timeout": 0, "latency": 0},
        "no decrease but the one Retry-After", m["decreases"])
u = upstream(aport, "b")
c.check(u["adaptive"].get("decreases", {}).get("retry_after") == 1
        and u["adaptive"].get("increases") == m["increases"] and u.get("rate") == m["effective"],
        "admin: the same rate, increases and decreases as the metrics", (u, m))
c.done()
EOF2
e2e_sluice_stop
