#!/usr/bin/env bash
# The adaptive rate goes down on a 503 (without Retry-After) and on slow answers, and comes
# back up once the backend is fast again; it never leaves [min_rate, max_rate], and every
# record is delivered in the end.
#
# sluice: rate = 50/s to start, adaptive within [5, 100], target_latency 100 ms; retries every
# 100 ms. The backend answers 503 first, then 200 after 300 ms, then 200 at once. 60 records
# are spilled with X-Sluice-Delay: 1s while the upstream is paused, then it is resumed; once
# the backend is fast again, 100 more requests come.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --status 503
sh_sluice_start_spilling 'rate = 50.0; paused = true; adaptive = true; min_rate = 5.0;
  max_rate = 100.0; target_latency = "100ms"; retry = { max_attempts = 50;
  initial_backoff = "100ms"; max_backoff = "100ms"; jitter = 0.0; };'

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_PORT" <<'EOF2'
import sys, time
from shaping import *

port, aport, rport = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = Checks()

def rate_state():
    sm = metrics(aport)
    return (metric(aport, "sluice_drain_rate_effective", sm, upstream="b"),
            metric(aport, "sluice_drain_rate_increases_total", sm, upstream="b"),
            {k: metric(aport, "sluice_drain_rate_decreases_total", sm, upstream="b", cause=k)
             for k in ("429", "503", "retry_after", "timeout", "latency")})

ids = [check_accept_body(post(port, "/orders/%d" % i, {"X-Sluice-Delay": "1s"}), "POST %d" % i,
                         held=True)["id"] for i in range(60)]
time.sleep(1.0)
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")

# 503s: down, never below min_rate.
wait_for(lambda: rate_state()[2]["503"] >= 2, 10, "two decreases for 503", state=rate_state)
rate, ups, downs = rate_state()
c.check(5 <= rate < 50, "503s took the rate down from 50/s, not below 5/s (%g/s)" % rate, rate)
c.check(downs["429"] == 0 and downs["retry_after"] == 0 and downs["latency"] == 0,
        "every decrease so far is for 503", downs)

# Slow answers: the latency passes the target.
get(rport, "/_ctl/service/300")
get(rport, "/_ctl/status/200")
wait_for(lambda: rate_state()[2]["latency"] >= 1, 15, "a decrease for latency", state=rate_state)
low = rate_state()[0]
c.check(5 <= low, "the rate stays at or above min_rate (%g/s)" % low, low)

# Fast again: it grows back.
get(rport, "/_ctl/service/0")
ups_before = rate_state()[1]
# New traffic for it to learn from (the backlog may be gone): live or spilled, all answered.
for i in range(100):
    r = post(port, "/orders/more-%d" % i)
    if r.status not in (200, 202):
        c.check(False, "POST more-%d answered 200 (live) or 202 (spilled)" % i, r)
    if r.status == 202:
        ids.append(r.json()["id"])
wait_for(lambda: rate_state()[1] >= ups_before + 3, 15, "three steps up once answers are fast",
         state=rate_state)
wait_for(lambda: all(get(port, "/_sluice/requests/" + i).json().get("status") == "delivered"
                     for i in ids), 30, "every record delivered", state=rate_state)
rate, ups, downs = rate_state()
c.check(5 <= rate <= 100, "the rate is within [5, 100] (%g/s)" % rate, rate)
c.check(upstream(aport, "b").get("dead") == 0, "no dead letter", upstream(aport, "b"))
c.done()
EOF2
e2e_sluice_stop
