#!/usr/bin/env bash
# Expiry (issue 12): a spilled request whose queue_ttl or X-Sluice-Expires-After passes before
# the drain reaches it is never sent. With on_expire "dead" (the default) it becomes a dead
# letter with the reason "expired"; with "drop" it is settled and counted; either way its
# status URL reads "expired" and sluice_expired_total{upstream,outcome} counts it. The shorter
# of the route's queue_ttl and the header wins; a request delayed past its expiry expires; a
# request that does not expire is delivered; a bad header gets 400; and the deadline, kept
# with the spooled record, survives a kill -9 and a restart.
#
# sluice: one upstream, paused while the records are spilled (rate 0.01/s, burst 1: the primer
# goes live, every later POST spills), then rate 50/s and resumed at run time. Routes: /drop
# (queue_ttl 1s, on_expire drop), /ttl (queue_ttl 1h, dead) and / (no queue_ttl);
# limits.max_delay 1d.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base batch)
limits = { max_delay = "1d"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 0.01; burst = 1;
                paused = true; } );
routes = ( { prefix = "/drop"; upstream = "b"; spill = true; queue_ttl = "1s";
             on_expire = "drop"; },
           { prefix = "/ttl"; upstream = "b"; spill = true; queue_ttl = "1h"; },
           { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

r = post(port, "/primer")
c.check(r.status == 200, "the primer is forwarded live (the one token)", r)

# Bad headers: 400 with a specific message, nothing stored.
for value, want in (("soon", "X-Sluice-Expires-After is not a duration"),
                    ("0s", "X-Sluice-Expires-After is not a duration greater than 0"),
                    ("2d", "X-Sluice-Expires-After is beyond limits.max_delay (1d)")):
    r = post(port, "/bad", {"X-Sluice-Expires-After": value, "X-Test-Seq": "99"})
    c.check(r.status == 400 and want in (r.json() or {}).get("error", ""),
            "X-Sluice-Expires-After: %s gets 400 saying %r" % (value, want), r)

def spill(path, seq, headers=None):
    h = {"X-Test-Seq": str(seq)}
    h.update(headers or {})
    r = post(port, path, h)
    return check_accept_body(r, "POST %s (seq %d)" % (path, seq), held=True)["id"]

ids = {
    1: spill("/a", 1, {"X-Sluice-Expires-After": "1s"}),    # header alone: dead
    2: spill("/drop/b", 2),                                  # route alone: drop
    3: spill("/ttl/c", 3, {"X-Sluice-Expires-After": "1s"}), # header 1s < route 1h: expires
    4: spill("/drop/d", 4, {"X-Sluice-Expires-After": "1h"}),# route 1s < header 1h: expires
    5: spill("/e", 5, {"X-Sluice-Expires-After": "1h"}),    # does not expire: delivered
    6: spill("/f", 6),                                       # no expiry at all: delivered
    7: spill("/ttl/g", 7),                                   # route 1h: delivered
}
# Delayed past its expiry: due in 2 s, expired after 1 s (the TTL counts from acceptance).
r = post(port, "/h", {"X-Test-Seq": "8", "X-Sluice-Delay": "2s", "X-Sluice-Expires-After": "1s"})
ids[8] = check_accept_body(r, "POST /h delayed 2s, expiring after 1s", held=True)["id"]
s = get(port, "/_sluice/requests/" + ids[1]).json()
c.check(s.get("status") == "queued", "before its deadline the status reads queued", s)

time.sleep(1.3)
admin(aport, "POST", "/admin/upstreams/b/rate?value=50", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")

def status(i):
    return get(port, "/_sluice/requests/" + ids[i]).json() or {}

wait_for(lambda: all(status(i).get("status") == "delivered" for i in (5, 6, 7)) and
         all(status(i).get("status") == "expired" for i in (1, 2, 3, 4, 8)), 10,
         "5, 6, 7 delivered and 1, 2, 3, 4, 8 expired",
         state=lambda: {i: status(i) for i in ids})
time.sleep(0.3)
seqs = by_seq(read_log(rec_log))
for i in (1, 2, 3, 4, 8):
    c.check(i not in seqs, "the backend never saw expired record %d" % i, seqs.get(i))
    s = status(i)
    c.check(s.get("status") == "expired" and s.get("error") == "expired" and s.get("attempts") == 0,
            "status URL of %d: expired, reason expired, no attempt spent" % i, s)
for i in (5, 6, 7):
    c.check(len(seqs.get(i, [])) == 1, "record %d was delivered once" % i, seqs.get(i))
    for e in seqs.get(i, []):
        c.check(not any(k.startswith("x-sluice-expir") for k in e["h"]),
                "record %d reached the backend without the expiry field or header" % i, e["h"])
c.check(99 not in seqs, "no refused request reached the backend", seqs.get(99))

d = admin(aport, "GET", "/admin/upstreams/b/dead", expect_status=200).json().get("dead", [])
c.check(sorted(x.get("id") for x in d) == sorted(ids[i] for i in (1, 3, 8)),
        "the dead letters are 1, 3 and 8 (on_expire dead); 2 and 4 were dropped",
        [(x.get("id"), x.get("error")) for x in d])
c.check(all(x.get("error") == "expired" and x.get("dead_at") for x in d),
        "each expired dead letter gives the reason expired and a dead_at", d)
sm = metrics(aport)
c.check(metric(aport, "sluice_expired_total", sm, upstream="b", outcome="dead") == 3,
        "sluice_expired_total{outcome=dead} is 3",
        metric(aport, "sluice_expired_total", sm, upstream="b", outcome="dead"))
c.check(metric(aport, "sluice_expired_total", sm, upstream="b", outcome="drop") == 2,
        "sluice_expired_total{outcome=drop} is 2",
        metric(aport, "sluice_expired_total", sm, upstream="b", outcome="drop"))
c.check(not metric(aport, "sluice_drained_total", sm, upstream="b", outcome="dead"),
        "an expiry is no failed replay: sluice_drained_total{outcome=dead} stays 0",
        metric(aport, "sluice_drained_total", sm, upstream="b", outcome="dead"))
u = upstream(aport, "b")
c.check(u.get("ready") == 0 and u.get("delayed") == 0 and u.get("dead") == 3,
        "admin: nothing ready or delayed, 3 dead", u)

# For the restart: paused again, one record that expires in 2 s and one that never does.
admin(aport, "POST", "/admin/upstreams/b/pause", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/rate?value=0.01", expect_status="2xx")
post(port, "/primer2")  # takes the bucket's token if one is left: the next two spill
ids[10] = spill("/r1", 10, {"X-Sluice-Expires-After": "2s"})
ids[11] = spill("/r2", 11)
save_json(sys.argv[3] + ".ids", ids)
c.done()
EOF

e2e_kill sluice
e2e_log "sluice killed with SIGKILL with two records queued; restarting on the same spool"
e2e_sluice_start -n sluice2 "$conf"

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
ids = {int(k): v for k, v in load_json(rec_log + ".ids").items()}

def status(i):
    r = get(port, "/_sluice/requests/" + ids[i])
    return r.json() or {} if r.status == 200 else {"http": r.status}

# The restart started paused (as configured): wait past the 2 s deadline, then resume.
wait_for(lambda: status(10).get("status") == "queued", 10, "record 10 queued after the restart",
         state=lambda: status(10))
time.sleep(2.2)
admin(aport, "POST", "/admin/upstreams/b/rate?value=50", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
wait_for(lambda: status(11).get("status") == "delivered" and status(10).get("status") == "expired",
         10, "after the restart, 11 delivered and 10 expired",
         state=lambda: (status(10), status(11)))
time.sleep(0.3)
seqs = by_seq(read_log(rec_log))
c.check(10 not in seqs, "the record that expired across the restart was never sent", seqs.get(10))
c.check(len(seqs.get(11, [])) == 1, "the record that does not expire was delivered after it",
        seqs.get(11))
d = admin(aport, "GET", "/admin/upstreams/b/dead", expect_status=200).json().get("dead", [])
c.check(ids[10] in [x.get("id") for x in d], "it is a dead letter with the others",
        [x.get("id") for x in d])
sm = metrics(aport)
c.check(metric(aport, "sluice_expired_total", sm, upstream="b", outcome="dead") == 1,
        "the new process counts its one expiry", metric(aport, "sluice_expired_total", sm,
                                                        upstream="b", outcome="dead"))
c.done()
EOF
e2e_sluice_stop sluice2
