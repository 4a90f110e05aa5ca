#!/usr/bin/env bash
# Delayed delivery: X-Sluice-Delay and X-Sluice-Not-Before (Unix seconds and HTTP date) always
# spill, even with budget to spare, and are delivered no earlier than asked (and not much
# later); the admin API counts them as delayed meanwhile. On a route without spill the
# headers are a 400.
#
# sluice: rate = 50/s, burst = 10 (plenty of budget), route /d spills, /nd does not.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 50.0; burst = 10; } );
routes = (
  { prefix = "/d"; upstream = "b"; spill = true; },
  { prefix = "/nd"; upstream = "b"; spill = false; }
);
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time, email.utils, math
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

r = post(port, "/nd/1", {"X-Sluice-Delay": "2s", "X-Test-Seq": "100"})
c.check(r.status == 400, "X-Sluice-Delay on a route without spill is a 400", r)
r = post(port, "/nd/2", {"X-Sluice-Not-Before": str(int(time.time()) + 5), "X-Test-Seq": "101"})
c.check(r.status == 400, "X-Sluice-Not-Before on a route without spill is a 400", r)
r = post(port, "/d/live")
c.check(r.status == 200, "without a delay header a POST with budget is forwarded", r)

due = {}
t = time.time()
r = post(port, "/d/delay", {"X-Sluice-Delay": "2s", "X-Test-Seq": "1"})
j = check_accept_body(r, "POST with X-Sluice-Delay: 2s")
c.check(j.get("not_before") is not None and 1.5 <= j.get("eta_seconds", 0) <= 2.1,
        "the 202 of a 2 s delay is due in about 2 s", j)
due[1] = t + 2.0
nb = math.ceil(time.time()) + 3
r = post(port, "/d/unix", {"X-Sluice-Not-Before": str(nb), "X-Test-Seq": "2"})
j = check_accept_body(r, "POST with X-Sluice-Not-Before: <Unix seconds>")
want = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nb))
c.check(j.get("not_before") == want, "the 202 names the time asked for", (j, want))
s = get(port, r.header("Location")).json()
c.check(s.get("status") == "queued" and s.get("not_before") == want and s.get("position") is None,
        "the status URL shows the delayed request queued until its time", s)
due[2] = float(nb)
nb2 = math.ceil(time.time()) + 2
r = post(port, "/d/date", {"X-Sluice-Not-Before": email.utils.formatdate(nb2, usegmt=True),
                           "X-Test-Seq": "3"})
check_accept_body(r, "POST with X-Sluice-Not-Before: <HTTP date>")
due[3] = float(nb2)

u = upstream(aport, "b")
c.check(u.get("delayed") == 3, "the admin API counts 3 delayed records", u)

wait_for(lambda: all(s in by_seq(read_log(rec_log)) for s in due), 8, "the delayed requests to arrive")
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
for s, d in sorted(due.items()):
    arr = seqs[s][0]["t"]
    c.check(arr >= d - 0.02, "seq %d delivered no earlier than asked" % s, "%.3fs early" % (d - arr))
    c.check(arr <= d + 1.5, "seq %d delivered within 1.5 s of its time" % s, "%.3fs late" % (arr - d))
    c.check(len(seqs[s]) == 1, "seq %d delivered once" % s, len(seqs[s]))
c.check(100 not in seqs and 101 not in seqs, "the 400s reached no backend", None)
c.check(upstream(aport, "b").get("delayed") == 0, "no delayed record left", upstream(aport, "b"))
c.done()
EOF
e2e_sluice_stop
