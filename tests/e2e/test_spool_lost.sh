#!/usr/bin/env bash
# A record lost to a damaged spool unit does not leave its status URL reading "queued" forever:
# it reads "lost" with the reason, the count is in sluice_spool_lost_records_total, and the
# records around it are delivered as usual.
#
# sluice: rate = 1/s, burst = 1, upstream paused (config), fsync off (no preallocated segments).
# Three requests are spilled one at a time, each in its own unit of the ready segment; sluice is
# stopped, one byte in the first unit's payload is flipped on disk, and sluice is started again
# on the same spool and resumed.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base off)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$E2E_WORK/state.json" <<'EOF'
import sys, time
from shaping import *

port, state = int(sys.argv[1]), sys.argv[2]
post(port, "/orders/primer")  # takes the only token: the next POSTs spill
ids = {}
for seq in (1, 2, 3):
    r = post(port, "/orders/%d" % seq, {"X-Test-Seq": str(seq)})
    ids[seq] = check_accept_body(r, "POST %d" % seq, held=True)["id"]
    time.sleep(0.05)  # one append group, so one unit, per request
time.sleep(0.3)      # the ledger journal is written within ~10 ms
save_json(state, {"ids": ids})
EOF
e2e_sluice_stop

seg=$(find "$E2E_WORK/spool/b" -name 'ready-*.seg' | sort | head -n 1)
[ -n "$seg" ] || e2e_fail "no ready segment in $E2E_WORK/spool/b"
# Segment header 64 bytes, unit header 48: byte 70 of the first unit's payload.
python3 - "$seg" <<'EOF'
import sys
path = sys.argv[1]
with open(path, "r+b") as f:
    f.seek(64 + 48 + 70)
    b = f.read(1)
    f.seek(64 + 48 + 70)
    f.write(bytes([b[0] ^ 0xff]))
EOF
e2e_log "flipped one byte in the first unit of $seg"

e2e_sluice_start -n sluice2 "$conf"
sh_require_admin
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" "$REC_LOG" <<'EOF'
import sys, time
from shaping import *

port, aport, state, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = Checks()
ids = {int(k): v for k, v in load_json(state)["ids"].items()}
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status=200)
wait_for(lambda: all(get(port, "/_sluice/requests/" + ids[n]).json().get("status") == "delivered"
                     for n in (2, 3)), 10, "requests 2 and 3 to be delivered",
         state=lambda: [get(port, "/_sluice/requests/" + ids[n]).json() for n in (1, 2, 3)])
s = get(port, "/_sluice/requests/" + ids[1]).json()
c.check(s.get("status") == "lost" and "damaged" in s.get("error", ""),
        "request 1, whose unit was damaged, reads lost with the reason", s)
c.check(metric(aport, "sluice_spool_lost_records_total", upstream="b") == 1,
        "sluice_spool_lost_records_total{upstream=b} is 1",
        metric(aport, "sluice_spool_lost_records_total", upstream="b"))
seqs = by_seq(read_log(rec_log))
c.check(1 not in seqs and len(seqs.get(2, [])) == 1 and len(seqs.get(3, [])) == 1,
        "the backend got requests 2 and 3 once each, not 1", sorted(seqs))
c.done()
EOF
e2e_sluice_stop sluice2
e2e_sluice_start -n sluice3 "$conf"
python3 - "$SLUICE_PORT" "$E2E_WORK/state.json" <<'EOF'
import sys
from shaping import *

port, state = int(sys.argv[1]), sys.argv[2]
c = Checks()
ids = {int(k): v for k, v in load_json(state)["ids"].items()}
s = get(port, "/_sluice/requests/" + ids[1]).json()
c.check(s.get("status") == "lost" and s.get("error"), "after a restart it still reads lost", s)
c.done()
EOF
e2e_sluice_stop sluice3
