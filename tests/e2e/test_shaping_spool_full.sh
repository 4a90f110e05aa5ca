#!/usr/bin/env bash
# A full spool answers 503 with Retry-After (whole seconds, at least 1) instead of 202, and
# loses nothing it accepted before: once the upstream resumes, every 202 is delivered, and
# after the drain the spool takes requests again.
#
# sluice: max_spool_bytes = 256KiB, upstream paused (nothing drains), rate = 1/s, burst = 1.
# Load: POSTs of 4 KiB of incompressible data (base64 of random bytes, which zstd cannot
# squeeze much) until the first 503; at most 400 of them.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; paused = true;
                max_spool_bytes = "256KiB"; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" <<'EOF'
import sys, time, os, base64
from shaping import *

port, aport, rec_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()

def body():
    return b'{"blob":"' + base64.b64encode(os.urandom(3000)) + b'"}'

r = post(port, "/orders/primer")
expect(r.status == 200, "the first POST takes the only token and is forwarded (200)", r)
accepted, full = [], None
for i in range(400):
    r = post(port, "/orders/%d" % i, {"X-Test-Seq": str(i)}, body())
    if r.status == 202:
        accepted.append(i)
        continue
    full = (i, r)
    break
log("accepted %d before: %r" % (len(accepted), full and full[1]))
c.check(full is not None, "the spool filled up within 400 x 4 KiB", len(accepted))
if full:
    i, r = full
    c.check(r.status == 503, "a full spool answers 503", r)
    ra = r.header("Retry-After") or ""
    c.check(ra.isdigit() and int(ra) >= 1, "with Retry-After in whole seconds, at least 1", ra)
    c.check(len(accepted) >= 20, "it accepted a fair share of 256 KiB first (>= 20 x 4 KiB)", len(accepted))
    # Still full: another one is refused too, and nothing accepted is gone.
    r2 = post(port, "/orders/again", {"X-Test-Seq": "9999"}, body())
    c.check(r2.status == 503, "still full: 503 again", r2)
    m = metric(aport, "sluice_requests_total", outcome="rejected")
    c.check(m is not None and m >= 2, "the refusals count as outcome=rejected", m)

admin(aport, "POST", "/admin/upstreams/b/rate?value=100", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")
want = set(accepted)
wait_for(lambda: want <= set(by_seq(read_log(rec_log))), 20, "every accepted request to be delivered")
seqs = by_seq(read_log(rec_log))
c.check(all(len(seqs[s]) == 1 for s in want), "each delivered once",
        [s for s in want if len(seqs[s]) != 1][:10])
if full:
    c.check(full[0] not in seqs and 9999 not in seqs, "the refused ones were not delivered", None)
wait_for(lambda: backlog(aport, "b") == 0, 10, "the backlog to be empty")
admin(aport, "POST", "/admin/upstreams/b/pause", expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/b/rate?value=1", expect_status="2xx")
# The spool has room again: a request over budget is spilled again.
rs = [post(port, "/orders/after%d" % k, {}, body()) for k in range(3)]
c.check(all(x.status in (200, 202) for x in rs) and any(x.status == 202 for x in rs),
        "after the drain the spool accepts again (202)", rs)
c.done()
EOF
e2e_sluice_stop
