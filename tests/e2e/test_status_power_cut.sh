#!/usr/bin/env bash
# journal_not_fsynced (issue 17): after a power cut every request that got a 202 still has a
# status URL that answers a real state, and its Idempotency-Key is still a repeat. The ledger
# journal was appended without fsync, so a cut took it back to its last fsync, the startup
# compaction: every status and key since the start was gone (404s, keys accepted twice).
#
# The cut: sluice runs with tests/support/fsync_probe.c preloaded, which copies the journal at
# each fsync/fdatasync; after kill -9 the journal is replaced by its copy at its last one, which
# is what a power cut that drops every unsynced write leaves of it. (The spool is left as it
# is: its data path keeps what it acknowledged, and the journal is what this test is about.)
#
# sluice: fsync = "batch", rate = 1/s, burst = 1, upstream paused (config). Ten POSTs are
# spilled (five with a key), then replayed at a high rate and delivered; the upstream is
# paused again and ten more are spilled (five with a key) and stay queued. Then the cut and a
# restart: the first ten read "delivered", the others "queued", every key is a repeat. A 202
# waits for the spool record alone, so the journal's copy lacks the last ten's frames: the
# census of the spool after the unclean stop rebuilds them (its log line is checked), and
# until it is done a status or key it may hold answers 503 with Retry-After (honoured here).
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

probe=$(dirname "$SLUICE")/sluice-fsync-probe.so
[ -f "$probe" ] || e2e_fail "the fsync probe $probe is not built (cmake --build)"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base batch)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
journal=$E2E_WORK/spool/ledger.journal
export SL_FSYNC_PROBE_LOG=$E2E_WORK/fsync-probe.log
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
LD_PRELOAD=$probe e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" <<'EOF'
import sys
from shaping import *

port, aport, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()


def spill(seq):
    extra = {"X-Test-Seq": str(seq)}
    if seq % 2 == 0:
        extra["Idempotency-Key"] = "k-%d" % seq
    a = post(port, "/orders/%d" % seq, extra, b'{"n":%d}' % seq)
    return check_accept_body(a, "spilled POST %d" % seq, held=True)["id"]


r = post(port, "/orders/primer")
expect(r.status == 200, "the first POST takes the only token and is forwarded (200)", r)
ids = {seq: spill(seq) for seq in range(1, 11)}
admin(aport, "POST", "/admin/upstreams/b/rate?value=1000", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
wait_for(lambda: all(get(port, "/_sluice/requests/" + ids[s]).json().get("status") == "delivered"
                     for s in range(1, 11)), 15, "the first 10 requests to be delivered")
admin(aport, "POST", "/admin/upstreams/b/pause", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/rate?value=0.001", expect_status="2xx")
r = post(port, "/orders/primer2")  # takes the token the high rate left, if any
ids.update({seq: spill(seq) for seq in range(11, 21)})
c.check(upstream(aport, "b").get("ready") == 10, "10 requests queued", upstream(aport, "b"))
save_json(state, {"ids": {str(k): v for k, v in ids.items()}})
c.done()
EOF
e2e_kill sluice

# The power cut: the journal as of its last fsync (the probe's copy; none: it was never synced).
python3 - "$journal" "$SL_FSYNC_PROBE_LOG" <<'EOF'
import os, shutil, sys
journal, log = sys.argv[1], sys.argv[2]
ino = os.stat(journal).st_ino
before = os.stat(journal).st_size
copy = "%s.%d" % (log, ino)
if os.path.exists(copy):
    shutil.copyfile(copy, journal)
else:
    os.truncate(journal, 0)
print("e2e: power cut: %s (%d bytes) replaced by its state at its last fsync (%d bytes)"
      % (journal, before, os.stat(journal).st_size))
EOF
unset SL_FSYNC_PROBE_LOG
e2e_sluice_start -n sluice2 "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" "$REC_LOG" \
  "$E2E_WORK/sluice2.err" <<'EOF'
import re, sys, time
from shaping import *

port, aport, state, rec_log, err_log = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                        sys.argv[5])
c = Checks()
ids = {int(k): v for k, v in load_json(state)["ids"].items()}


def patient(send):
    """Sends until the answer is not a 503 with Retry-After (the census after an unclean stop
    may still run), as a client that honours Retry-After does; at most 10 s."""
    deadline = time.time() + 10
    while True:
        r = send()
        if r.status != 503 or r.header("Retry-After") is None or time.time() > deadline:
            return r
        time.sleep(0.1)


for seq, i in sorted(ids.items()):
    s = patient(lambda: get(port, "/_sluice/requests/" + i))
    c.check(s.status == 200, "after the cut, the status URL of 202'd request %d answers 200" % seq, s)
    if s.status != 200:
        continue
    want = "delivered" if seq <= 10 else "queued"
    c.check(s.json().get("status") == want, "request %d reads %s" % (seq, want), s.json())
for seq in range(2, 21, 2):
    a = patient(lambda: post(port, "/orders/%d" % seq,
                             {"Idempotency-Key": "k-%d" % seq, "X-Test-Seq": "%d" % (100 + seq)},
                             b'{"n":%d}' % seq))
    c.check(a.status == 202 and a.json().get("id") == ids[seq],
            "a repeat of key k-%d after the cut answers 202 with the first id" % seq,
            (a.status, a.body[:200], ids[seq]))
# The journal lost the frames of the requests spilled after its last fsync (a 202 waits for
# the spool record alone): the census rebuilt them from the spool.
m = wait_for(lambda: re.search(r"(\d+) spooled record\(s\) read after an unclean stop: (\d+) "
                               r"status\(es\) and (\d+) Idempotency-Key\(s\)",
                               open(err_log).read()), 10, "the census's log line")
c.check(int(m.group(2)) >= 1 and int(m.group(3)) >= 1,
        "the census rebuilt statuses and keys the cut took from the journal", m.group(0))
u = upstream(aport, "b")
c.check(u.get("ready") == 10, "no repeat was queued again (10 records ready)", u)
time.sleep(0.3)
seqs = by_seq(read_log(rec_log))
c.check(all(len(seqs.get(n, [])) == 1 for n in range(1, 11)), "each delivered request reached the backend once",
        {n: len(seqs.get(n, [])) for n in range(1, 11)})
c.check(not any(100 + n in seqs for n in range(2, 21, 2)), "no repeat reached the backend", sorted(seqs))
c.done()
EOF
e2e_sluice_stop sluice2
