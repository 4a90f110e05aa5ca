#!/usr/bin/env bash
# limits.max_connections: with the limit reached, a further client is not
# served (refused, closed, 503, or left waiting) until a connection ends;
# then new clients are served again.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
limits = { max_connections = 2; idle_timeout = "30s"; header_timeout = "30s"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; response_timeout = "5s"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" <<'EOF'
import socket, sys
from e2e_http import *
port = int(sys.argv[1])
REQ = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

# Two keep-alive connections, both served and left open.
held = []
for i in range(2):
    c = Conn(port)
    c.send(REQ)
    r = c.read_response()
    expect(r.status == 200, "request on connection %d of 2" % (i + 1), r)
    held.append(c)

def third_outcome(timeout):
    """What a third client gets while two connections are open."""
    try:
        c = Conn(port, timeout=timeout)
    except ConnectionRefusedError:
        return None, "refused"
    except socket.timeout:
        return None, "connect timed out"
    try:
        c.send(REQ)
    except OSError as e:
        return c, "send failed: %s" % e
    try:
        r = c.read_response(timeout=timeout)
    except Closed:
        return c, "closed"
    except Timeout:
        return c, "no answer"
    return c, "status %d" % r.status

c3, what = third_outcome(1.5)
print("third connection while 2 are open:", what)
expect(what != "status 200", "a third connection must not be served while max_connections=2 are open", what)

# One of the two goes away: a new client is served again (the waiting one
# may be served too, or have been turned away).
held[0].close()
ok = False
t0 = now()
while now() - t0 < 5 and not ok:
    try:
        c = Conn(port, timeout=2)
        c.send(REQ)
        r = c.read_response(timeout=2)
        ok = r.status == 200
        c.close()
    except (OSError, Closed, Timeout):
        pass
expect(ok, "a new connection is served within 5 s of a slot freeing up")
print("a new client is served after one connection closed")
held[1].close()
if c3:
    c3.close()
EOF
e2e_sluice_stop
