#!/usr/bin/env bash
# The status URL of a spilled request walks queued -> (in_flight) -> delivered and never back;
# an unknown id is a 404 with a JSON error.
#
# sluice: rate = 1/s, burst = 1, spill on. The first POST takes the only token and is
# forwarded (200); the next two are spilled (202) and delivered about 1 s apart. The backend
# answers the second one 201 (X-Test-Status), which its status must report as "code".
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --service-ms 300
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, rec_log = int(sys.argv[1]), sys.argv[2]
c = Checks()

r = post(port, "/orders/first")
expect(r.status == 200, "the first POST takes the only token and is forwarded (200)", r)
t_spill = time.time()
r1 = post(port, "/orders/a", {"X-Test-Status": "201"})
j1 = check_accept_body(r1, "second POST")
r2 = post(port, "/orders/b")
j2 = check_accept_body(r2, "third POST")
c.check(j1["status"] == "queued" and j2["status"] == "queued", "both are queued", (j1, j2))
c.check(j2["position"] > j1["position"] or j2["position"] >= 1,
        "the later request is not ahead of the earlier one", (j1["position"], j2["position"]))
c.check(j1["eta_seconds"] >= 0 and j2["eta_seconds"] >= j1["eta_seconds"],
        "ETAs are non-negative and grow with the position", (j1["eta_seconds"], j2["eta_seconds"]))

loc = r1.header("Location")
seen, last = [], None
order = {"queued": 0, "in_flight": 1, "delivered": 2}
deadline = time.time() + 10
while time.time() < deadline:
    s = get(port, loc)
    expect(s.status == 200, "GET %s answers 200" % loc, s)
    js = s.json()
    st = js.get("status")
    if st != last:
        seen.append(st)
        last = st
        log("status of %s: %s" % (js.get("id"), js))
        if st == "queued":
            c.check(js.get("id") == j1["id"], "status JSON carries the id", js)
            c.check(isinstance(js.get("position"), int), "queued status has a position", js)
            c.check(isinstance(js.get("eta_seconds"), (int, float)), "queued status has eta_seconds", js)
            c.check(js.get("attempts") == 0, "queued status before any attempt has attempts 0", js)
    if st == "delivered":
        c.check(js.get("code") == 201, "delivered status reports the backend's status 201", js)
        c.check(js.get("attempts") == 1, "delivered after 1 attempt", js)
        c.check(isinstance(js.get("delivered_at"), str) and
                re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", js["delivered_at"]),
                "delivered_at is RFC 3339", js.get("delivered_at"))
        break
    expect(st in order, "status is queued, in_flight or delivered", js)
    time.sleep(0.02)
c.check(seen and seen[0] == "queued", "the status starts as queued", seen)
c.check(seen and seen[-1] == "delivered", "the status reaches delivered", seen)
c.check(all(order[a] < order[b] for a, b in zip(seen, seen[1:]) if a in order and b in order),
        "the status never goes back", seen)
log("status walk: %s (in_flight seen: %s)" % (" -> ".join(seen), "in_flight" in seen))

wait_for(lambda: get(port, r2.header("Location")).json().get("status") == "delivered", 10,
         "the third POST to be delivered")
n = len([e for e in read_log(rec_log) if e["path"].startswith("/orders/")])
c.check(n == 3, "the backend received the 3 POSTs once each", n)

u = get(port, "/_sluice/requests/" + "0" * 32)
c.check(u.status == 404, "an unknown id is a 404", u)
if u.status == 404:
    c.check(u.json().get("error") == "unknown request id", "404 body is the contract's JSON error", u.body)
u = get(port, "/_sluice/requests/not-an-id")
c.check(u.status == 404, "a malformed id is a 404", u)
n2 = len(read_log(rec_log))
c.check(n2 == n, "status URLs are answered by sluice, not forwarded", n2)
c.done()
EOF
e2e_sluice_stop
