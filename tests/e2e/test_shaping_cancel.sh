#!/usr/bin/env bash
# A queued or delayed request can be cancelled with DELETE on its status URL (with the admin
# token when one is set): it then reads "cancelled", is never delivered, and stays so across
# kill -9 and a restart, the drain settling its record without replaying it. An unknown id is a
# 404, a request past cancelling (delivered) a 409, another method a 405.
#
# sluice: admin.token set; rate = 1/s, burst = 1, upstream paused (config) so that spilled
# requests stay queued until the test resumes replay. Request 2 is delayed by 2 s.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; token = "s3cret"; };
log = { level = "info"; access = true; };
spool = { dir = "$E2E_WORK/spool"; fsync = "batch"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$E2E_WORK/state.json" <<'EOF'
import sys, time
from shaping import *

port, state = int(sys.argv[1]), sys.argv[2]
c = Checks()
auth = {"Authorization": "Bearer s3cret"}

post(port, "/orders/primer")  # takes the only token: the next POSTs spill
ids = {}
for seq, extra in ((1, {}), (2, {"X-Sluice-Delay": "2s"}), (3, {})):
    r = post(port, "/orders/%d" % seq, dict(extra, **{"X-Test-Seq": str(seq)}))
    ids[seq] = check_accept_body(r, "POST %d" % seq, held=seq != 2)["id"]
url = {n: "/_sluice/requests/" + i for n, i in ids.items()}

r = request(port, "DELETE", url[1])
c.check(r.status == 401 and r.header("WWW-Authenticate") == "Bearer",
        "DELETE without the token is a 401 asking for a bearer token", r)
r = request(port, "DELETE", url[1], {"Authorization": "Bearer wrong"})
c.check(r.status == 401, "DELETE with a wrong token is a 401", r)
c.check(get(port, url[1]).json().get("status") == "queued", "request 1 is still queued", None)

r = request(port, "DELETE", url[1], auth)
c.check(r.status == 200 and r.json().get("status") == "cancelled" and r.json().get("id") == ids[1],
        "DELETE on the queued request 1 answers 200, status cancelled", r)
c.check(get(port, url[1]).json().get("status") == "cancelled", "its status URL reads cancelled", None)
s = get(port, url[2]).json()
c.check(s.get("status") == "queued" and s.get("not_before"), "request 2 is delayed", s)
r = request(port, "DELETE", url[2], auth)
c.check(r.status == 200 and r.json().get("status") == "cancelled",
        "DELETE on the delayed request 2 answers 200, status cancelled", r)
r = request(port, "DELETE", url[1], auth)
c.check(r.status == 200 and r.json().get("status") == "cancelled",
        "a second DELETE on request 1 answers 200 again (cancelled)", r)
r = request(port, "DELETE", "/_sluice/requests/" + "0" * 32, auth)
c.check(r.status == 404, "DELETE on an unknown id is a 404", r)
r = request(port, "PUT", url[3], auth)
c.check(r.status == 405 and "DELETE" in (r.header("Allow") or ""),
        "PUT on a status URL is a 405 whose Allow lists DELETE", (r, r.header("Allow")))
s = get(port, url[3]).json()
c.check(s.get("status") == "queued" and s.get("position") == 1,
        "request 3 is queued and first in line now that 1 is cancelled", s)
time.sleep(0.3)  # the cancellations are flushed to the journal at once; leave it a moment
save_json(state, {"ids": ids})
c.done()
EOF
e2e_kill sluice
e2e_log "sluice killed with SIGKILL after two cancellations; restarting on the same spool"
e2e_sluice_start -n sluice2 "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, state, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = Checks()
auth = {"Authorization": "Bearer s3cret"}
ids = {int(k): v for k, v in load_json(state)["ids"].items()}
url = {n: "/_sluice/requests/" + i for n, i in ids.items()}

for n in (1, 2):
    s = get(port, url[n]).json()
    c.check(s.get("status") == "cancelled", "after kill -9, request %d still reads cancelled" % n, s)
c.check(get(port, url[3]).json().get("status") == "queued", "request 3 still reads queued", None)
admin(aport, "POST", "/admin/upstreams/b/resume", "s3cret", expect_status=200)
wait_for(lambda: get(port, url[3]).json().get("status") == "delivered", 10,
         "request 3 to be delivered")
# Past request 2's due time, with the spool empty: both cancelled records were settled unsent.
wait_for(lambda: (lambda u: u.get("ready", 1) + u.get("delayed", 1) + u.get("inflight", 1) == 0)(
    upstream(aport, "b", "s3cret")), 10, "the spool to be empty",
    state=lambda: upstream(aport, "b", "s3cret"))
time.sleep(2.5)
seqs = by_seq(read_log(rec_log))
c.check(len(seqs.get(3, [])) == 1, "request 3 reached the backend once", sorted(seqs))
c.check(1 not in seqs and 2 not in seqs, "the cancelled requests 1 and 2 never reached the backend",
        sorted(seqs))
for n in (1, 2):
    c.check(get(port, url[n]).json().get("status") == "cancelled",
            "request %d still reads cancelled after the drain passed it" % n, None)
r = request(port, "DELETE", url[3], auth)
c.check(r.status == 409 and r.json().get("status") == "delivered",
        "DELETE on the delivered request 3 is a 409 with its status", r)
c.done()
EOF
e2e_sluice_stop sluice2
e2e_sluice_start -n sluice3 "$conf"

python3 - "$SLUICE_PORT" "$E2E_WORK/state.json" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, state, rec_log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = Checks()
ids = {int(k): v for k, v in load_json(state)["ids"].items()}
for n in (1, 2):
    s = get(port, "/_sluice/requests/" + ids[n]).json()
    c.check(s.get("status") == "cancelled", "after a graceful restart request %d reads cancelled" % n, s)
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
c.check(1 not in seqs and 2 not in seqs, "and was never delivered", sorted(seqs))
c.done()
EOF
e2e_sluice_stop sluice3
