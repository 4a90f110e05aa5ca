#!/usr/bin/env bash
# Pipelining: several requests sent in one write are all answered, in order,
# on the same connection, even when the first is the slowest; a request split
# at odd places across writes works too.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; response_timeout = "5s"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" <<'EOF'
import sys, time
from e2e_http import *
port = int(sys.argv[1])

c = Conn(port)
c.send(b"GET /sleep/400 HTTP/1.1\r\nHost: x\r\n\r\n"
       b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
       b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\npipelined-body"
       b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n"
       b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"
       b"GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n")
t0 = now()
r1 = c.read_response()
expect(r1.status == 200, "1st pipelined response (GET /sleep/400)", r1)
expect(now() - t0 >= 0.35, "1st response is the slow one, not overtaken")
r2 = c.read_response()
expect(r2.status == 201, "2nd pipelined response (GET /status/201)", r2)
r3 = c.read_response()
expect(r3.status == 200 and b"POST /echo" in r3.body and r3.body.endswith(b"pipelined-body"),
       "3rd pipelined response (POST /echo echoes its request and body)", r3.body[:300])
r4 = c.read_response()
expect(r4.status == 200 and len(r4.body) > 0, "4th pipelined response (GET /chunked)", r4)
r5 = c.read_response(head=True)
expect(r5.status == 200 and r5.body == b"", "5th pipelined response (HEAD)", r5)
r6 = c.read_response()
expect(r6.status == 202, "6th pipelined response (GET /status/202)", r6)
print("6 pipelined requests answered in order in %.2fs" % (now() - t0))

# The same connection keeps working, with requests split across writes.
msg = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
       b"GET /status/203 HTTP/1.1\r\nHost: x\r\n\r\n")
pieces = [msg[0:3], msg[3:17], msg[17:30], msg[30:48], msg[48:60], msg[60:70], msg[70:]]
for p in pieces:
    c.send(p)
    time.sleep(0.05)
r = c.read_response()
expect(r.status == 200 and r.body.endswith(b"abcde"), "POST /echo sent in pieces", r.body[:300])
r = c.read_response()
expect(r.status == 203, "GET /status/203 sent in pieces", r)
print("requests split across writes answered")
EOF
e2e_sluice_stop
