#!/usr/bin/env bash
# Status URLs and Idempotency-Key repeats survive restarts, through the ledger journal
# (<spool dir>/ledger.journal): after kill -9 a queued request still reads "queued" with a
# sane position, and a repeat of its key gets its id without being queued again; after a
# delivery and a graceful restart it reads "delivered" with the backend's status code; after a
# restart whose config puts a new upstream first, statuses and keys still belong to the upstream
# they were made for (the journal keeps upstream ids by name).
#
# sluice: rate = 1/s, burst = 1, spill on, upstream paused (config): the first POST takes the
# only token and is forwarded; the next three are spilled and stay queued until the test
# resumes replay through the admin API. The backend answers the first spilled one 201.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base batch)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
journal=$E2E_WORK/spool/ledger.journal
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$journal" "$E2E_WORK/state.json" <<'EOF'
import os, sys
from shaping import *

port, journal, state = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = post(port, "/orders/primer")
expect(r.status == 200, "the first POST takes the only token and is forwarded (200)", r)
ids = []
for seq, extra in ((1, {"Idempotency-Key": "k-restart", "X-Test-Status": "201"}), (2, {}), (3, {})):
    a = post(port, "/orders/%d" % seq, dict(extra, **{"X-Test-Seq": str(seq)}), b'{"n":%d}' % seq)
    ids.append(check_accept_body(a, "spilled POST %d" % seq, held=True)["id"])


def journaled():
    try:
        with open(journal, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return all(bytes.fromhex(i) in data for i in ids) and b"k-restart" in data


# The journal is written within ~10 ms of a change; wait for it rather than guess.
wait_for(journaled, 10, "the three ids and the key to reach " + journal)
save_json(state, {"ids": ids})
EOF
e2e_kill sluice
e2e_log "sluice killed with SIGKILL with 3 requests queued; restarting on the same spool"
e2e_sluice_start -n sluice2 "$conf"
sh_require_admin
e2e_assert_file_match 'ledger journal .*: [0-9]+ status record\(s\) and 1 Idempotency-Key' \
  "$E2E_WORK/sluice2.err" "sluice2 logs what it read from the journal"

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" <<'EOF'
import sys
from shaping import *

port, aport, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
ids = load_json(state)["ids"]
pos = []
for n, i in enumerate(ids, 1):
    s = get(port, "/_sluice/requests/" + i)
    c.check(s.status == 200, "after kill -9, the status URL of queued request %d answers 200" % n, s)
    if s.status != 200:
        continue
    js = s.json()
    c.check(js.get("status") == "queued" and js.get("id") == i, "request %d still reads queued" % n, js)
    p = js.get("position")
    c.check(isinstance(p, int) and 1 <= p <= 3, "its position is within the backlog of 3", js)
    c.check(js.get("eta_seconds") is None or js["eta_seconds"] >= 0, "its ETA is not negative", js)
    pos.append(p)
c.check(pos == sorted(pos) and len(set(pos)) == len(pos), "positions keep the acceptance order", pos)

a = post(port, "/orders/1", {"Idempotency-Key": "k-restart", "X-Test-Seq": "4"}, b'{"n":4}')
c.check(a.status == 202, "a repeat of the key after kill -9 answers 202", a)
if a.status == 202:
    c.check(a.json().get("id") == ids[0], "the repeat gets the first request's id",
            (a.json().get("id"), ids[0]))
u = upstream(aport, "b")
c.check(u.get("ready") == 3, "the repeat was not queued again (3 records ready)", u)

admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
wait_for(lambda: all(get(port, "/_sluice/requests/" + i).json().get("status") == "delivered"
                     for i in ids), 15, "the 3 queued requests to be delivered")
c.done()
EOF
e2e_sluice_stop sluice2
e2e_log "sluice2 stopped with SIGTERM after the deliveries; restarting"
e2e_sluice_start -n sluice3 "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, state, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = Checks()
ids = load_json(state)["ids"]
for n, i in enumerate(ids, 1):
    s = get(port, "/_sluice/requests/" + i)
    c.check(s.status == 200, "after a graceful restart, the status URL of request %d answers" % n, s)
    if s.status == 200:
        js = s.json()
        c.check(js.get("status") == "delivered" and js.get("attempts") == 1,
                "request %d reads delivered after 1 attempt" % n, js)
        c.check(js.get("code") == (201 if n == 1 else 200),
                "request %d reports the backend's status code" % n, js)
a = post(port, "/orders/1", {"Idempotency-Key": "k-restart", "X-Test-Seq": "5"}, b'{"n":5}')
c.check(a.status == 202, "a repeat of the key after the second restart answers 202", a)
if a.status == 202:
    c.check(a.json().get("id") == ids[0] and a.json().get("status") == "delivered",
            "the repeat gets the first id, delivered", a.json())
u = upstream(aport, "b")
c.check(u.get("ready", 0) + u.get("delayed", 0) == 0, "nothing was queued again", u)
s = get(port, "/_sluice/requests/" + "0" * 32)
c.check(s.status == 404, "an unknown id is still a 404", s)
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
c.check(all(len(seqs.get(n, [])) == 1 for n in (1, 2, 3)), "each request reached the backend once",
        {n: len(seqs.get(n, [])) for n in (1, 2, 3, 4, 5)})
c.check(4 not in seqs and 5 not in seqs, "the repeats never reached the backend", sorted(seqs))
c.done()
EOF
e2e_sluice_stop sluice3

# A config that puts a new upstream "a" before "b": config indexes move, upstream ids must not.
conf2=$(e2e_write_config sluice2.conf <<EOF
$(e2e_config_base batch)
upstreams = ( { name = "a"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true; },
              { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; } );
routes = ( { prefix = "/other"; upstream = "a"; spill = true; },
           { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_log "restarting with upstream a inserted before b"
e2e_sluice_start -n sluice4 "$conf2"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" <<'EOF'
import sys
from shaping import *

port, aport, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
ids = load_json(state)["ids"]
s = get(port, "/_sluice/requests/" + ids[0])
c.check(s.status == 200 and s.json().get("status") == "delivered",
        "request 1 still reads delivered with the upstreams reordered", s)
post(port, "/other/primer")  # takes a's only token, so the next POST to a spills
a = post(port, "/other/1", {"Idempotency-Key": "k-restart", "X-Test-Seq": "6"}, b'{"n":6}')
j = check_accept_body(a, "a POST to upstream a with b's key", held=True)
c.check(j.get("id") != ids[0], "the key of upstream b is not taken for upstream a", j)
s = get(port, a.header("Location")).json()
c.check(s.get("status") == "queued" and isinstance(s.get("position"), int),
        "the new request reads queued with a position on upstream a", s)
c.check(upstream(aport, "a").get("ready") == 1, "it was queued on upstream a", upstream(aport, "a"))
b = post(port, "/orders/1", {"Idempotency-Key": "k-restart", "X-Test-Seq": "7"}, b'{"n":7}')
c.check(b.status == 202 and b.json().get("id") == ids[0],
        "on upstream b the key still gives the first request's id", b)
c.done()
EOF
e2e_sluice_stop sluice4
