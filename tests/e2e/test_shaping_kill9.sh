#!/usr/bin/env bash
# kill -9 in the middle of a drain, then a restart on the same spool: every request that got
# a 202 is delivered at least once (a 202 means durable; delivery is at-least-once, so a
# record in flight at the kill may come twice, which the test reports but allows).
#
# sluice: rate = 20/s, burst = 5, spill on, fsync batch. Load: 200 POSTs at 200/s; sluice is
# killed with SIGKILL about 3 s into the drain (a third of it) and restarted with the same
# config; the rest must then drain.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base batch)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 20.0; burst = 5; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$REC_LOG" "$E2E_WORK/state.json" <<'EOF'
import sys, time
from shaping import *
port, rec_log, state = int(sys.argv[1]), sys.argv[2], sys.argv[3]
res = burst(port, "/orders", 200, 200, conns=16)
st = {}
for r in res:
    st[r["status"]] = st.get(r["status"], 0) + 1
log("burst: %s" % st)
expect(set(st) <= {200, 202}, "every answer is 200 or 202", st)
acc = {r["seq"]: json.loads(r["body"])["id"] for r in res if r["status"] == 202}
expect(len(acc) >= 150, "most of the burst was spilled", len(acc))
save_json(state, {"accepted": acc, "live": [r["seq"] for r in res if r["status"] == 200]})
# Mid-drain: about 3 s in.
time.sleep(2)
n = len(by_seq(read_log(rec_log)))
log("%d of 200 delivered at the kill" % n)
expect(n < 150, "the drain was still running at the kill", n)
EOF
e2e_kill sluice
e2e_log "sluice killed with SIGKILL mid-drain; restarting on the same spool"
e2e_sluice_start -n sluice2 "$conf"

python3 - "$SLUICE_PORT" "$REC_LOG" "$E2E_WORK/state.json" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys, time
from shaping import *
port, rec_log, state, aport = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Checks()
s = load_json(state)
acc = {int(k): v for k, v in s["accepted"].items()}
want = set(acc) | set(s["live"])
t = time.time()
deadline = t + 20
while time.time() < deadline and not want <= set(by_seq(read_log(rec_log))):
    time.sleep(0.1)
time.sleep(1)
seqs = by_seq(read_log(rec_log))
missing = sorted(set(acc) - set(seqs))
c.check(not missing, "every request that got a 202 was delivered after the restart",
        "%d missing, e.g. %s; the last delivery %.1fs before the check; admin: %s"
        % (len(missing), missing[:10], time.time() - max(e["t"] for e in read_log(rec_log)),
           admin(aport, "GET", "/admin/upstreams").body[:400]))
c.check(set(s["live"]) <= set(seqs), "every forwarded (200) request was delivered", None)
dups = {k: len(v) for k, v in seqs.items() if len(v) > 1}
log("delivered %d of %d, %d duplicates (allowed: at-least-once) %s; restart drain took %.1fs"
    % (len(want & set(seqs)), len(want), len(dups), dict(list(dups.items())[:5]), time.time() - t))
c.check(len(dups) <= 10, "few duplicates (records in flight or unacked at the kill)", len(dups))
after = [e["t"] for e in read_log(rec_log) if e["t"] >= t]
if len(after) >= 2:
    gap, at = max_gap(after)
    c.check(gap <= 0.5, "after the restart the drain never pauses (longest pause at most 0.5 s)",
            "%.2fs pause %.2fs after the restart" % (gap, at - t))
wrong = [k for k in acc for e in seqs.get(k, []) if e["h"].get("x-sluice-request-id") != acc[k]]
c.check(not wrong, "replays after the restart carry the id of their 202", wrong[:5])
c.done()
EOF
e2e_sluice_stop sluice2
