#!/usr/bin/env bash
# SIGHUP with a new rate: the drain rate changes within a second and the backlog is intact
# (nothing lost, nothing delivered twice, the same process).
#
# sluice: rate = 10/s, burst = 1, spill on. Load: 200 POSTs at 400/s. After 3 s of draining
# at 10/s the config is rewritten with rate = 40/s and sluice gets SIGHUP. Checks: about
# 10/s before the reload; about 40/s from 1 s after it (in [T+1, T+3): 80 +-12%); the
# admin API and sluice_drain_rate_limit say 40; every record delivered exactly once.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$E2E_WORK/sluice.conf
write_config() {
  {
    e2e_config_base
    cat <<EOF
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = $1; burst = 1; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
  } >"$conf.tmp"
  mv "$conf.tmp" "$conf"
}
write_config 10.0
e2e_sluice_start "$conf"
sh_require_admin
pid=$(e2e_pid sluice)

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" "$E2E_WORK/state.json" <<'EOF'
import sys, time
from shaping import *
port, aport, rec_log, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = burst(port, "/orders", 400, 200, conns=16)
st = sorted(set(r["status"] for r in res))
expect(set(st) <= {200, 202}, "every answer is 200 or 202", st)
acc = [r["seq"] for r in res if r["status"] == 202]
expect(len(acc) >= 190, "most of the burst was spilled", len(acc))
time.sleep(3)
save_json(state, {"seqs": [r["seq"] for r in res], "backlog": backlog(aport, "b"),
                  "delivered": len(by_seq(read_log(rec_log)))})
EOF
write_config 40.0
t_hup=$(date +%s.%N)
e2e_signal sluice HUP

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" "$E2E_WORK/state.json" "$t_hup" <<'EOF'
import sys, time
from shaping import *
port, aport, rec_log, state, t_hup = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
c = Checks()
s = load_json(state)
u = upstream(aport, "b")
b_after = u["ready"] + u["delayed"] + u["inflight"]
d_after = len(by_seq(read_log(rec_log)))
log("before the reload: backlog %s, delivered %d; just after: backlog %s (%s in flight), delivered %d"
    % (s["backlog"], s["delivered"], b_after, u["inflight"], d_after))
# Read in this order, nothing is counted in neither: a record leaves the backlog only once its
# delivery is durable, after the backend logged it. Counted in both: the records in flight the
# backend already logged (their `delivered` frame not yet synced), and at most one that moved
# between the two reads.
c.check(b_after + d_after >= 200 and b_after - u["inflight"] + d_after <= 200 + 1 and b_after > 0,
        "the backlog is intact across the reload (backlog + delivered = 200, in flight aside)",
        (b_after, u["inflight"], d_after))
time.sleep(max(0, t_hup + 3.05 - time.time()))
times = sorted(e["t"] for e in read_log(rec_log) if e.get("seq") is not None)
before = len([t for t in times if t_hup - 2 <= t < t_hup])
after = len([t for t in times if t_hup + 1 <= t < t_hup + 3])
first_sec = len([t for t in times if t_hup <= t < t_hup + 1])
log("deliveries: %d in the 2 s before SIGHUP, %d in the second after, %d in [T+1, T+3)"
    % (before, first_sec, after))
c.check(17 <= before <= 23, "about 10/s before the reload (2 s: 20 +-15%)", before)
c.check(70 <= after <= 90, "about 40/s from 1 s after the reload ([T+1, T+3): 80 +-12%)", after)
c.check(first_sec >= 25, "the new rate applies within a second (>= 25 in [T, T+1))", first_sec)
u = upstream(aport, "b")
c.check(u.get("rate") == 40, "the admin API shows rate 40", u.get("rate"))
c.check(metric(aport, "sluice_drain_rate_limit", upstream="b") == 40, "sluice_drain_rate_limit is 40",
        metric(aport, "sluice_drain_rate_limit", upstream="b"))
c.check(metric(aport, "sluice_config_reloads_total", result="success") == 1,
        "sluice_config_reloads_total{result=success} is 1", metric(aport, "sluice_config_reloads_total", result="success"))
want = set(s["seqs"])
wait_for(lambda: want <= set(by_seq(read_log(rec_log))), 10, "every request to be delivered")
time.sleep(0.5)
seqs = by_seq(read_log(rec_log))
c.check(all(len(seqs[k]) == 1 for k in want), "each exactly once",
        {k: len(seqs[k]) for k in want if len(seqs[k]) != 1})
c.done()
EOF
e2e_assert_eq "$pid" "$(e2e_pid sluice)" "sluice pid after the reload"
e2e_sluice_stop
