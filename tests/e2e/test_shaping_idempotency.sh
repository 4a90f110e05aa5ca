#!/usr/bin/env bash
# Idempotency-Key on a spill route: a repeat within dedupe_window answers 202 with the first
# request's id, its current status and the same Location, and is not queued again, both while
# the first is queued and after it was delivered. Another key is another request.
#
# sluice: rate = 1/s, burst = 1, spill on, upstream paused (nothing replays until resumed):
# the first POST takes the token and is forwarded; the keyed ones are spilled.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true; } );
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

r = post(port, "/orders/primer")
expect(r.status == 200, "the first POST takes the only token and is forwarded (200)", r)

a1 = post(port, "/orders", {"Idempotency-Key": "k1", "X-Test-Seq": "1"}, b'{"n":1}')
ja1 = check_accept_body(a1, "first POST with Idempotency-Key k1", held=True)
a2 = post(port, "/orders", {"Idempotency-Key": "k1", "X-Test-Seq": "2"}, b'{"n":2}')
c.check(a2.status == 202, "a repeat of k1 answers 202", a2)
if a2.status == 202:
    ja2 = a2.json()
    c.check(ja2.get("id") == ja1["id"], "the repeat of k1 gets the first id", (ja2.get("id"), ja1["id"]))
    c.check(ja2.get("status") == "queued", "the repeat reports the current status (queued)", ja2)
    c.check(a2.header("Location") == a1.header("Location"), "the repeat has the same Location",
            (a2.header("Location"), a1.header("Location")))
    c.check(set(ja2) >= {"id", "status", "position", "eta_seconds"}, "the repeat has the same JSON fields", ja2)
b1 = post(port, "/orders", {"Idempotency-Key": "k2", "X-Test-Seq": "3"}, b'{"n":3}')
jb1 = check_accept_body(b1, "POST with Idempotency-Key k2", held=True)
c.check(jb1["id"] != ja1["id"], "another key is another request", (jb1["id"], ja1["id"]))

u = upstream(aport, "b")
c.check(u.get("ready") == 2, "2 records queued (k1 once, k2)", u)

admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
wait_for(lambda: all(get(port, "/_sluice/requests/" + i).json().get("status") == "delivered"
                     for i in (ja1["id"], jb1["id"])), 10, "k1 and k2 to be delivered")
a3 = post(port, "/orders", {"Idempotency-Key": "k1", "X-Test-Seq": "4"}, b'{"n":4}')
c.check(a3.status == 202, "a repeat of k1 after delivery answers 202", a3)
if a3.status == 202:
    ja3 = a3.json()
    c.check(ja3.get("id") == ja1["id"] and ja3.get("status") == "delivered",
            "the repeat after delivery gets the first id with status delivered", ja3)
time.sleep(1.5)
seqs = by_seq(read_log(rec_log))
c.check(len(seqs.get(1, [])) == 1, "the first k1 request was delivered once", len(seqs.get(1, [])))
c.check(2 not in seqs and 4 not in seqs, "the repeats of k1 never reached the backend",
        sorted(s for s in seqs if s in (2, 4)))
c.check(len(seqs.get(3, [])) == 1, "k2 was delivered once", len(seqs.get(3, [])))
if seqs.get(1):
    c.check(seqs[1][0]["h"].get("idempotency-key") == "k1", "Idempotency-Key reaches the backend",
            seqs[1][0]["h"].get("idempotency-key"))
c.done()
EOF
e2e_sluice_stop
