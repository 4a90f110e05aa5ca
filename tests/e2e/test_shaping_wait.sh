#!/usr/bin/env bash
# Wait mode, both ways: a spilled request replayed within wait_timeout answers with the
# backend's real response (status, headers, body); one that is not answers 202 after
# wait_timeout and is still delivered later; a client that hangs up does not cancel its record.
#
# sluice: rate = 1/s, burst = 1. Routes /w (wait, wait_timeout 5s), /ws (wait, wait_timeout
# 1s), /a (async). The first POST takes the token (forwarded); the next /w POST is spilled and
# replayed about 1 s later, within its 5 s. Then 4 async records queue ahead of a /ws POST,
# which cannot be replayed within 1 s.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; } );
routes = (
  { prefix = "/w"; upstream = "b"; spill = true; mode = "wait"; wait_timeout = "5s"; },
  { prefix = "/ws"; upstream = "b"; spill = true; mode = "wait"; wait_timeout = "1s"; },
  { prefix = "/a"; upstream = "b"; spill = true; }
);
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$REC_LOG" <<'EOF'
import sys, time, socket
from shaping import *

port, rec_log = int(sys.argv[1]), sys.argv[2]
c = Checks()

r = post(port, "/a/primer")
expect(r.status == 200, "the first POST takes the only token and is forwarded (200)", r)

# In time: the real response.
r = post(port, "/w/1", {"X-Test-Status": "201", "X-Test-Seq": "1"})
log("wait-mode answer after %.2fs: %r" % (r.elapsed, r))
e = by_seq(read_log(rec_log)).get(1)
c.check(e is not None and e[0]["h"].get("x-sluice-request-id"),
        "the /w POST was spilled and replayed (it carries X-Sluice-Request-Id)", e and e[0]["h"])
c.check(r.status == 201, "the client got the backend's real status 201", r)
c.check(r.header("X-Backend-N") is not None, "the client got the backend's headers", r.headers)
body = r.body.decode("utf-8", "replace")
c.check('"backend": "rec"' in body and '"/w/1"' in body, "the client got the backend's body", body)
c.check(0.2 <= r.elapsed <= 4.5, "the answer came when the record was replayed (~1 s)", r.elapsed)

# Too slow: 202 after wait_timeout, delivered later.
for i in range(4):
    q = post(port, "/a/q%d" % i)
    check_accept_body(q, "async POST %d queued ahead" % i)
r = post(port, "/ws/2", {"X-Test-Seq": "2"})
log("slow wait-mode answer after %.2fs: %r" % (r.elapsed, r))
j = check_accept_body(r, "/ws POST not replayed within wait_timeout")
c.check(0.9 <= r.elapsed <= 2.5, "the 202 came after wait_timeout (1 s)", r.elapsed)
c.check(j["status"] in ("queued", "in_flight"), "the 202 reports it still queued", j)
c.check(2 not in by_seq(read_log(rec_log)), "it was not delivered before the 202", None)
wait_for(lambda: get(port, r.header("Location")).json().get("status") == "delivered", 15,
         "the /ws POST to be delivered after its 202")
c.check(len(by_seq(read_log(rec_log)).get(2, [])) == 1, "and delivered once", None)

# A client that hangs up does not cancel its record (2 async records queue ahead of it).
for i in range(2):
    check_accept_body(post(port, "/a/r%d" % i), "async POST %d queued ahead" % i)
s = socket.create_connection(("127.0.0.1", port), timeout=5)
body = b'{"n":3}'
s.sendall(b"POST /w/3 HTTP/1.1\r\nHost: x\r\nX-Test-Seq: 3\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
time.sleep(0.3)
s.close()
e = wait_for(lambda: by_seq(read_log(rec_log)).get(3), 10,
             "the record of the client that hung up to be delivered")
c.check(e[0]["h"].get("x-sluice-request-id"), "it was spilled and replayed", e[0]["h"])
time.sleep(1.2)
c.check(len(by_seq(read_log(rec_log)).get(3, [])) == 1, "delivered once", len(by_seq(read_log(rec_log)).get(3, [])))
c.done()
EOF
e2e_sluice_stop
