#!/usr/bin/env bash
# The admin API refuses what it does not understand before it changes anything, and the status
# URLs follow its dead-letter operations at once:
#   - a rate must be a finite number above 0: value=0, nan, inf, -1, empty or absent is a 400
#     and the rate stays as it was (0 would lift the limit; pause is what stops the drain);
#   - a query parameter an action does not take is a 400 naming it: "?ID=" on purge must not
#     purge every dead letter;
#   - an id that is not a dead letter is a 404 (redrive and purge), as is an unknown upstream or
#     action; a known action with the wrong method is a 405 with an Allow header;
#   - GET / lists the endpoints with their methods;
#   - a redriven dead letter reads "queued" as soon as the redrive is answered, a purged one
#     "purged".
#
# sluice: rate = 1/s, burst = 1; a backend that answers 500 and max_attempts = 1, so every
# spilled record becomes a dead letter at its first replay.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --status 500
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1;
                retry = { max_attempts = 1; initial_backoff = "100ms"; max_backoff = "100ms";
                          multiplier = 2.0; jitter = 0.0; }; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

# Three dead letters: the first POST takes the only token (forwarded, 500), the others spill and
# die at their first replay.
post(port, "/orders/primer")
ids = [check_accept_body(post(port, "/orders/%d" % i, {"X-Test-Seq": str(i)}), "POST %d" % i)["id"]
       for i in (1, 2, 3)]
wait_for(lambda: upstream(aport, "b").get("dead") == 3, 15, "3 dead letters",
         state=lambda: upstream(aport, "b"))
admin(aport, "POST", "/admin/upstreams/b/pause", expect_status=200)

# Rates.
for bad in ("0", "nan", "NaN", "inf", "-inf", "-1", "", "1e10", "5x"):
    r = admin(aport, "POST", "/admin/upstreams/b/rate?value=" + bad)
    c.check(r.status == 400, "rate value=%r is refused with 400" % bad, r)
r = admin(aport, "POST", "/admin/upstreams/b/rate")
c.check(r.status == 400, "a rate without a value is refused with 400", r)
c.check(upstream(aport, "b").get("rate") == 1, "the rate is still 1 after the refusals",
        upstream(aport, "b"))
c.check(metric(aport, "sluice_drain_rate_limit", upstream="b") == 1,
        "sluice_drain_rate_limit still reads 1", metric(aport, "sluice_drain_rate_limit", upstream="b"))
r = admin(aport, "POST", "/admin/upstreams/b/rate?value=2.5")
c.check(r.status == 200 and r.json().get("rate") == 2.5, "a good rate (2.5) is taken", r)
r = admin(aport, "POST", "/admin/upstreams/b/rate?value=3&value=4")
c.check(r.status == 400, "a repeated value is refused", r)
c.check(upstream(aport, "b").get("rate") == 2.5, "the rate is still 2.5", upstream(aport, "b"))

# Unknown or misspelt query parameters.
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge?ID=" + ids[0])
c.check(r.status == 400 and "ID" in (r.json() or {}).get("error", ""),
        "purge?ID= is a 400 that names the parameter", r)
r = admin(aport, "POST", "/admin/upstreams/b/dead/redrive?ids=" + ids[0])
c.check(r.status == 400 and "ids" in (r.json() or {}).get("error", ""), "redrive?ids= is a 400", r)
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge?id")
c.check(r.status == 400, "purge?id without a value is a 400, not 'all'", r)
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge?id=" + "f" * 80)
c.check(r.status == 400, "purge with an overlong id is a 400, not 'all'", r)
r = admin(aport, "POST", "/admin/upstreams/b/pause?now=1")
c.check(r.status == 400 and "now" in (r.json() or {}).get("error", ""), "pause?now=1 is a 400", r)
r = admin(aport, "POST", "/admin/upstreams/b/rate?value=2&burst=5")
c.check(r.status == 400 and "burst" in (r.json() or {}).get("error", ""), "rate?burst= is a 400", r)
r = admin(aport, "GET", "/admin/upstreams?name=b")
c.check(r.status == 400 and "name" in (r.json() or {}).get("error", ""), "GET /admin/upstreams?name= is a 400", r)
time.sleep(0.3)
c.check(upstream(aport, "b").get("dead") == 3, "the 3 dead letters are all still there",
        upstream(aport, "b"))

# Ids, upstreams and actions that do not exist.
unknown = "0123456789abcdef0123456789abcdef"
for op in ("redrive", "purge"):
    r = admin(aport, "POST", "/admin/upstreams/b/dead/%s?id=%s" % (op, unknown))
    c.check(r.status == 404, "%s of an id that is not a dead letter is a 404" % op, r)
r = admin(aport, "POST", "/admin/upstreams/nope/pause")
c.check(r.status == 404, "an unknown upstream is a 404", r)
r = admin(aport, "POST", "/admin/upstreams/b/frobnicate")
c.check(r.status == 404, "an unknown action is a 404", r)

# Wrong methods.
for method, path, allow in (("GET", "/admin/upstreams/b/pause", "POST"),
                            ("DELETE", "/admin/upstreams/b/rate?value=3", "POST"),
                            ("POST", "/admin/upstreams/b/dead", "GET, HEAD"),
                            ("GET", "/admin/upstreams/b/dead/purge", "POST"),
                            ("POST", "/admin/upstreams", "GET, HEAD"),
                            ("POST", "/metrics", "GET, HEAD")):
    r = admin(aport, method, path)
    c.check(r.status == 405 and r.header("Allow") == allow,
            "%s %s is a 405 with Allow: %s" % (method, path, allow), (r, r.header("Allow")))
c.check(upstream(aport, "b").get("rate") == 2.5, "the DELETE did not touch the rate",
        upstream(aport, "b"))

# The index.
r = admin(aport, "GET", "/")
c.check(r.status == 200, "GET / answers 200", r)
eps = {e.get("path"): e.get("methods") for e in (r.json() or {}).get("endpoints", [])}
for path, methods in (("/metrics", ["GET", "HEAD"]), ("/admin/upstreams", ["GET", "HEAD"]),
                      ("/admin/upstreams/<name>/pause", ["POST"]),
                      ("/admin/upstreams/<name>/dead/purge[?id=<id>]", ["POST"])):
    c.check(eps.get(path) == methods, "GET / lists %s with %s" % (path, methods), eps)
r = admin(aport, "GET", "/nothing-here")
c.check(r.status == 404, "an unknown path is still a 404 (/ is not a prefix)", r)

# Statuses follow redrive and purge at once (the drain is paused, so nothing else moves them).
r = admin(aport, "POST", "/admin/upstreams/b/dead/redrive?id=" + ids[0])
c.check(r.status == 202, "redrive of one id answers 202", r)
s = get(port, "/_sluice/requests/" + ids[0]).json()
c.check(s.get("status") == "queued", "the redriven request reads queued at once", s)
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge?id=" + ids[1])
c.check(r.status == 202, "purge of one id answers 202", r)
s = get(port, "/_sluice/requests/" + ids[1]).json()
c.check(s.get("status") == "purged", "the purged request reads purged at once", s)
wait_for(lambda: upstream(aport, "b").get("dead") == 1, 5, "1 dead letter left")
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge?id=" + ids[1])
c.check(r.status == 404, "purging it again is a 404", r)
r = admin(aport, "POST", "/admin/upstreams/b/dead/purge")
c.check(r.status == 202, "purge of all answers 202", r)
s = get(port, "/_sluice/requests/" + ids[2]).json()
c.check(s.get("status") == "purged", "after purge of all, the last dead letter reads purged", s)
s = get(port, "/_sluice/requests/" + ids[0]).json()
c.check(s.get("status") == "queued", "the redriven one still reads queued", s)
c.done()
EOF
e2e_sluice_stop
