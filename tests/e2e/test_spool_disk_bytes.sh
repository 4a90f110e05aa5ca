#!/usr/bin/env bash
# The spool's byte series reconcile with the disk, and sluice_backlog_bytes is the backlog.
#
# sluice: fsync "batch" (so ready segments are preallocated), upstream paused, spill on.
# 300 POSTs with 2 KiB of random body each are spilled. Then, with the spool quiet:
#   - sluice_spool_disk_bytes + sluice_spool_preallocated_bytes equals the size of the
#     spool directory's files (du -b), within 8 KiB: the directory entry itself (4 KiB) and
#     the 64-byte header of a spare segment that is not in use yet;
#   - a spare segment is preallocated (sluice_spool_preallocated_bytes > 0);
#   - sluice_backlog_bytes equals the compressed bytes written (nothing delivered yet).
# After a resume at full speed every record is delivered: sluice_backlog_bytes is 0, and the
# disk and preallocated series still add up to du.
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
e2e_sluice_start "$conf"
sh_require_admin

sh_py - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/spool/b" <<'EOF'
import os, subprocess, sys, time
from shaping import *
port, aport, sdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
N, TOL = 300, 8192

def du():
    return int(subprocess.check_output(["du", "-sb", sdir]).split()[0])

def series():
    s = metrics(aport)
    return {k: metric(aport, k, s, upstream="b") for k in (
        "sluice_backlog_bytes", "sluice_spool_disk_bytes", "sluice_spool_preallocated_bytes")}, s

def settled(pred, what):
    """Waits until pred(values) holds and the values and du stay the same for 1 s."""
    last, since, deadline = None, time.time(), time.time() + 20
    while time.time() < deadline:
        v, s = series()
        cur = (tuple(sorted(v.items())), du())
        if cur != last:
            last, since = cur, time.time()
        elif pred(v) and time.time() - since >= 1.0:
            return v, s, cur[1]
        time.sleep(0.1)
    fail("timed out waiting for %s: last %r" % (what, last))

res = [post(port, "/orders/%d" % i, body=os.urandom(2048)) for i in range(N)]
st = [r.status for r in res]
c.check(st.count(202) >= N - 2, "the POSTs were spilled (202)", sorted(set(st)))
wait_for(lambda: backlog(aport, "b") >= N - 2, 10, "the backlog to hold the spilled records")

v, s, d = settled(lambda v: (v["sluice_spool_preallocated_bytes"] or 0) > 0,
                  "a preallocated spare segment")
log("spilled: %r, du -b %d" % (v, d))
disk, pre, back = (v["sluice_spool_disk_bytes"], v["sluice_spool_preallocated_bytes"],
                   v["sluice_backlog_bytes"])
c.check(pre > 64 << 20, "sluice_spool_preallocated_bytes shows the spare segment (> 64 MiB)", pre)
c.check(abs(d - (disk + pre)) <= TOL,
        "du -b of the spool = sluice_spool_disk_bytes + sluice_spool_preallocated_bytes (+-8 KiB)",
        (d, disk, pre, d - disk - pre))
written = metric(aport, "sluice_spool_written_bytes_total", s, upstream="b", kind="compressed")
c.check(back == written, "sluice_backlog_bytes = the compressed bytes written (none delivered)",
        (back, written))
c.check(N * 2048 <= back <= disk, "sluice_backlog_bytes holds the bodies and is within the disk bytes",
        (back, disk))

admin(aport, "POST", "/admin/upstreams/b/rate?value=1000", expect_status=200)
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status=200)
wait_for(lambda: backlog(aport, "b") == 0, 20, "the backlog to be delivered")
v, s, d = settled(lambda v: v["sluice_backlog_bytes"] == 0, "sluice_backlog_bytes to drop to 0")
log("delivered: %r, du -b %d" % (v, d))
c.check(v["sluice_backlog_bytes"] == 0, "sluice_backlog_bytes is 0 once everything is delivered",
        v["sluice_backlog_bytes"])
c.check(abs(d - (v["sluice_spool_disk_bytes"] + v["sluice_spool_preallocated_bytes"])) <= TOL,
        "after delivery too, du -b = disk + preallocated bytes (+-8 KiB)",
        (d, v["sluice_spool_disk_bytes"], v["sluice_spool_preallocated_bytes"]))
u = upstream(aport, "b")
c.check(u.get("backlog_bytes") == 0, "GET /admin/upstreams: backlog_bytes 0", u)
c.done()
EOF
e2e_sluice_stop
