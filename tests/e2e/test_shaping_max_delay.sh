#!/usr/bin/env bash
# limits.max_delay: an X-Sluice-Delay or X-Sluice-Not-Before beyond it, or too large to hold,
# is a 400 whose JSON body says why, and reaches no backend. Regression: a delay near 2^64 ms
# wrapped around to a time in the past and the request was delivered at once.
#
# sluice: limits.max_delay = 1h; route /d spills.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
limits = { max_delay = "1h"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 50.0; burst = 10; } );
routes = ( { prefix = "/d"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time, email.utils
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
now = int(time.time())

BEYOND = "beyond limits.max_delay (1h) from now"
bad = [
    # (seq, header, value, what the reason must say)
    (100, "X-Sluice-Delay", "18446744073709551615ms", "X-Sluice-Delay is " + BEYOND),
    (101, "X-Sluice-Delay", "18446744073709551s", "X-Sluice-Delay is " + BEYOND),
    (102, "X-Sluice-Delay", "99999999999999999999s", "X-Sluice-Delay is not a duration"),
    (103, "X-Sluice-Delay", "1h1ms", "X-Sluice-Delay is " + BEYOND),
    (104, "X-Sluice-Delay", "30d", "X-Sluice-Delay is " + BEYOND),
    (105, "X-Sluice-Not-Before", str(now + 7200), "X-Sluice-Not-Before is " + BEYOND),
    (106, "X-Sluice-Not-Before", "99999999999999999999999", "X-Sluice-Not-Before is " + BEYOND),
    (107, "X-Sluice-Not-Before", "18446744073709551", "X-Sluice-Not-Before is " + BEYOND),
    (108, "X-Sluice-Not-Before", "Fri, 31 Dec 9999 23:59:59 GMT",
     "X-Sluice-Not-Before is " + BEYOND),
    (109, "X-Sluice-Not-Before", "Fri, 31 Dec 99999999999 23:59:59 GMT",
     "X-Sluice-Not-Before is neither Unix seconds nor an HTTP date"),
]
for seq, name, value, why in bad:
    r = post(port, "/d/bad%d" % seq, {name: value, "X-Test-Seq": str(seq)})
    c.check(r.status == 400, "%s: %s is a 400" % (name, value), r)
    if r.status == 400:
        err = r.json().get("error", "")
        c.check(err.startswith(why), "%s: %s: the 400 says why" % (name, value), (err, why))

# Within the limit: accepted as before.
r = post(port, "/d/ok1", {"X-Sluice-Delay": "1s", "X-Test-Seq": "1"})
check_accept_body(r, "X-Sluice-Delay: 1s")
r = post(port, "/d/ok2", {"X-Sluice-Delay": "1h", "X-Test-Seq": "2"})
check_accept_body(r, "X-Sluice-Delay: 1h (the limit itself)")
r = post(port, "/d/ok3", {"X-Sluice-Not-Before": str(now + 1800), "X-Test-Seq": "3"})
check_accept_body(r, "X-Sluice-Not-Before: in 30 min")
r = post(port, "/d/ok4", {"X-Sluice-Not-Before": email.utils.formatdate(now + 1800, usegmt=True),
                          "X-Test-Seq": "4"})
check_accept_body(r, "X-Sluice-Not-Before: an HTTP date in 30 min")

u = upstream(aport, "b")
c.check(u.get("delayed") == 4, "the admin API counts the 4 accepted requests as delayed", u)
wait_for(lambda: 1 in by_seq(read_log(rec_log)), 5, "the 1 s delay to be delivered")
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
c.check(sorted(seqs) == [1], "only the 1 s delay reached the backend, no 400 did", sorted(seqs))
c.done()
EOF
e2e_sluice_stop
