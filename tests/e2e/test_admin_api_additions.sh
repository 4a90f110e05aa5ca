#!/usr/bin/env bash
# What the admin API gained for sluicectl, and that earlier clients still get what they had:
#   - GET /admin/upstreams: "state" (paused, flowing), "oldest_ready_at" and
#     "oldest_age_seconds" while records wait, "drained_since_empty" counting what left the
#     line since it last started from empty;
#   - GET /admin/upstreams/<name>/dead: "status" (the backend's last HTTP status), "age_seconds",
#     "dead_at", "body_bytes" on each dead letter and "next"; paging with ?limit= and ?after=
#     (the pages put together are the whole list, in order); ?id= for one dead letter with its
#     headers; every bad parameter a 400 that says why, an id that is not there a 404;
#   - POST /admin/reload: the reload SIGHUP runs, answered when it has ended: 200 for a good
#     file, 422 with "file:line: message" for a broken one (the running config stays), behind
#     the token like the other admin routes.
#
# sluice: rate 1/s and the upstream paused while 12 records spill (then 200/s and resumed); retry.max_attempts = 1, so each becomes a
# dead letter at its first answer: 9 get 500, 3 get 507 from the recording backend.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start --status 500
# The usual base, with a token on the admin listener.
{
  e2e_config_base | sed 's/^admin = { listen = "127.0.0.1:0"; };$/admin = { listen = "127.0.0.1:0"; token = "t0k"; };/'
  cat <<EOF
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1;
                paused = true; retry = { max_attempts = 1; }; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
} >"$E2E_WORK/sluice.conf"
grep -q 'token = "t0k"' "$E2E_WORK/sluice.conf" || e2e_fail "the admin token is not in the config"
e2e_sluice_start "$E2E_WORK/sluice.conf"
sh_require_admin

SLUICE_PORT=$SLUICE_PORT SLUICE_ADMIN_PORT=$SLUICE_ADMIN_PORT python3 - <<'EOF'
import os, re, time
from shaping import *

c = Checks()
port, aport = int(os.environ["SLUICE_PORT"]), int(os.environ["SLUICE_ADMIN_PORT"])
conf, tok = os.path.join(os.environ["E2E_WORK"], "sluice.conf"), "t0k"

def dead(query="", status=200):
    r = admin(aport, "GET", "/admin/upstreams/b/dead" + query, tok)
    c.check(r.status == status, "GET .../dead%s answers %d" % (query, status), r)
    return r.json() or {}

u = upstream(aport, "b", tok)
c.check(u.get("state") == "paused" and u.get("drained_since_empty") == 0,
        "a paused upstream: state paused, drained_since_empty 0", u)
c.check(u.get("oldest_ready_at") is None and u.get("oldest_age_seconds") is None,
        "nothing waits: oldest_ready_at and oldest_age_seconds are null", u)

r = post(port, "/primer")
c.check(r.status == 500, "the first POST is forwarded live (the budget's one token)", r)
ids = []
for i in range(12):
    status = "507" if i % 5 == 4 or i == 11 else "500"
    r = post(port, "/orders/%d" % i, {"X-Test-Status": status, "X-Test-Seq": str(i)},
             body=b"x" * (10 + i))
    ids.append(check_accept_body(r, "POST %d" % i, held=True)["id"])
time.sleep(0.3)
u = upstream(aport, "b", tok)
c.check(u.get("ready") == 12 and isinstance(u.get("oldest_ready_at"), str)
        and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", u["oldest_ready_at"]),
        "12 ready, oldest_ready_at an RFC 3339 time", u)
c.check(isinstance(u.get("oldest_age_seconds"), (int, float)) and u["oldest_age_seconds"] >= 0.2,
        "oldest_age_seconds counts the wait of the oldest ready record", u)

admin(aport, "POST", "/admin/upstreams/b/rate?value=200", tok, expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", tok, expect_status="2xx")
wait_for(lambda: upstream(aport, "b", tok).get("dead") == 12, 15, "12 dead letters",
         state=lambda: upstream(aport, "b", tok))
u = upstream(aport, "b", tok)
c.check(u.get("state") == "flowing", "resumed: state flowing", u)
c.check(u.get("drained_since_empty") == 12, "the 12 dead-lettered records count as drained", u)

# The whole list, as before, with the new fields.
whole = dead()
dl = whole.get("dead", [])
order = [x.get("id") for x in dl]  # the dead store's order: as each became dead
c.check(sorted(order) == sorted(ids), "the whole list: the 12 ids", order)
c.check(whole.get("next", "missing") is None, "the whole list fits: next is null", whole.get("next"))
by_id = {x.get("id"): x for x in dl}
for i, id_ in enumerate(ids):
    x = by_id.get(id_, {})
    want = 507 if i % 5 == 4 or i == 11 else 500
    c.check(x.get("status") == want and x.get("error") == "HTTP %d" % want,
            "dead letter %d: status %d and error 'HTTP %d'" % (i, want, want), x)
    c.check(x.get("body_bytes") == 10 + i, "dead letter %d: body_bytes %d" % (i, 10 + i), x)
    c.check(isinstance(x.get("age_seconds"), (int, float)) and x["age_seconds"] > 0,
            "dead letter %d: age_seconds" % i, x)
    c.check(isinstance(x.get("dead_at"), str) and x["dead_at"] >= x.get("enqueued_at", ""),
            "dead letter %d: dead_at, not before enqueued_at" % i, x)
    c.check("headers" not in x, "the list leaves the headers out", x)

# Pages of 5: 5, 5, 2, which put together are the whole list.
seen, after, pages = [], None, 0
while True:
    q = "?limit=5" + ("&after=" + after if after else "")
    page = dead(q)
    pages += 1
    seen += [x["id"] for x in page.get("dead", [])]
    after = page.get("next")
    if after is None or pages > 5:
        break
    c.check(after == seen[-1], "next is the id of the page's last dead letter", (after, seen[-1]))
c.check(pages == 3 and seen == order, "pages of 5: three pages that make the whole list, in order",
        (pages, seen))
page = dead("?after=" + order[10])
c.check([x["id"] for x in page.get("dead", [])] == [order[11]] and page.get("next") is None,
        "after the 11th: the 12th alone, next null", page)

one = dead("?id=" + ids[4])
x = (one.get("dead") or [{}])[0]
hdrs = {k.lower(): v for k, v in x.get("headers", [])}
c.check(len(one.get("dead", [])) == 1 and x.get("id") == ids[4] and x.get("status") == 507,
        "?id= gives that one dead letter", one)
c.check(hdrs.get("x-test-status") == "507" and hdrs.get("x-test-seq") == "4"
        and "via" in hdrs, "?id= gives its request headers as [name, value] pairs", x.get("headers"))

for q, why in (("?id=zz", "id must be 32 hex digits"),
               ("?id=%s&limit=2" % ids[0], "give it alone"),
               ("?limit=0", "limit must be a whole number from 1 to 1000"),
               ("?limit=1001", "limit must be"),
               ("?limit=abc", "limit must be"),
               ("?after=12", "after must be 32 hex digits"),
               ("?ID=" + ids[0], "unknown or repeated query parameter: ID"),
               ("?limit=2&limit=3", "unknown or repeated query parameter: limit")):
    e = dead(q, 400)
    c.check(why in e.get("error", ""), "GET .../dead%s: 400 that says '%s'" % (q, why), e)
e = dead("?id=" + "0" * 32, 404)
c.check("no dead letter with that id" in e.get("error", ""), "?id= of no dead letter: 404", e)
admin(aport, "POST", "/admin/upstreams/b/dead/purge?id=" + ids[3], tok, expect_status=202)
wait_for(lambda: upstream(aport, "b", tok).get("dead") == 11, 5, "the purge to complete")
e = dead("?after=" + ids[3], 404)  # the purged one
c.check("list again from the start" in e.get("error", ""),
        "?after= a dead letter purged since: 404 that says to list again", e)
r = admin(aport, "GET", "/admin/upstreams/b/dead?limit=2")
c.check(r.status == 401, "the dead list still wants the token", r)

# POST /admin/reload.
r = admin(aport, "POST", "/admin/reload")
c.check(r.status == 401, "POST /admin/reload without the token: 401", r)
r = admin(aport, "POST", "/admin/reload?now=1", tok)
c.check(r.status == 400, "POST /admin/reload with a query: 400", r)
r = admin(aport, "POST", "/admin/reload", tok)
c.check(r.status == 200 and r.json().get("last_result") == "success"
        and r.json().get("successes") == 1 and r.json().get("reloading") is False,
        "POST /admin/reload of the good file: 200, success, answered once it has ended", r)
with open(conf) as f:
    text = f.read()
with open(conf, "w") as f:
    f.write(text.replace("rate = 1.0;", "rate = fast;"))
r = admin(aport, "POST", "/admin/reload", tok)
j = r.json() or {}
c.check(r.status == 422 and j.get("last_result") == "failure" and j.get("failures") == 1,
        "POST /admin/reload of a broken file: 422, failure", r)
c.check(re.search(r"sluice\.conf:5: ", j.get("error") or "") is not None
        and j.get("error") == j.get("last_error"),
        "the 422 names the file and line of the error", j)
u = upstream(aport, "b", tok)
c.check(u.get("rate") == 1 and u.get("paused") is True,
        "the running config stays (the good reload's rate 1, paused)", u)
info = admin(aport, "GET", "/admin/reload", tok, expect_status=200).json()
c.check(info.get("last_result") == "failure", "GET /admin/reload: the last one failed", info)
idx = get(aport, "/").json()
posts = [e for e in idx.get("endpoints", []) if e.get("path") == "/admin/reload"
         and "POST" in e.get("methods", [])]
c.check(len(posts) == 1 and posts[0].get("token") is True, "GET / lists POST /admin/reload, behind the token", idx)
c.done()
EOF
e2e_assert_file_match 'admin: reloading .*sluice\.conf' "$E2E_WORK/sluice.err" "the reload asked for is logged"
e2e_sluice_stop
