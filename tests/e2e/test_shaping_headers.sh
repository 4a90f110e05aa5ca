#!/usr/bin/env bash
# A replayed request is the request as received (method, target, headers, body; hop-by-hop
# headers removed) plus provenance: X-Sluice-Request-Id (the id of its 202), X-Sluice-Attempt,
# X-Sluice-Enqueued-At (RFC 3339 UTC with ms), X-Sluice-Queue-Wait, the X-Forwarded-For it
# would have had live, and the client's Idempotency-Key. Client-sent X-Sluice-* headers never
# reach the backend, neither live nor replayed.
#
# sluice: rate = 1/s, burst = 1, spill on. The first POST is forwarded live (it carries forged
# X-Sluice-* headers too); the second is spilled and replayed about 1 s later.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 1.0; burst = 1; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"

python3 - "$SLUICE_PORT" "$REC_LOG" <<'EOF'
import sys, time, hashlib, datetime
from shaping import *

port, rec_log = int(sys.argv[1]), sys.argv[2]
c = Checks()
forged = {
    "X-Sluice-Request-Id": "f" * 32,
    "X-Sluice-Attempt": "99",
    "X-Sluice-Enqueued-At": "2000-01-01T00:00:00.000Z",
    "X-Sluice-Queue-Wait": "12345",
    "X-Sluice-Anything": "forged",
}

live_h = dict(forged, **{"X-Test-Seq": "1", "X-Forwarded-For": "198.51.100.1"})
r = post(port, "/live", live_h)
expect(r.status == 200, "the first POST is forwarded live (200)", r)

body = b'{"order": 42, "items": ["a", "b"], "note": "' + b"z" * 500 + b'"}'
h = dict(forged, **{
    "X-Test-Seq": "2",
    "X-Forwarded-For": "203.0.113.7",
    "Idempotency-Key": "key-123",
    "X-Custom": "kept",
    "Connection": "keep-alive, X-Hop",
    "X-Hop": "dropped because Connection names it",
    "Keep-Alive": "timeout=5",
    "Content-Type": "application/json",
})
t_send = time.time()
r = request(port, "PUT", "/orders/7?x=1&y=%20", h, body)
j = check_accept_body(r, "PUT over budget")
rid = j["id"]

e = wait_for(lambda: by_seq(read_log(rec_log)).get(2), 10, "the spilled PUT to reach the backend")[0]
t_arr = e["t"]
hdr = e["h"]
names = [k.lower() for k, _ in e["headers"]]
log("replayed headers: %s" % e["headers"])

c.check(e["method"] == "PUT", "replay keeps the method", e["method"])
c.check(e["path"] == "/orders/7?x=1&y=%20", "replay keeps the target with its query", e["path"])
c.check(e["body_len"] == len(body) and e["body_sha"] == hashlib.sha256(body).hexdigest()[:16],
        "replay keeps the body byte for byte", (e["body_len"], len(body)))
c.check(hdr.get("x-custom") == "kept", "an end-to-end header is kept", hdr.get("x-custom"))
c.check(hdr.get("content-type") == "application/json", "Content-Type is kept", hdr.get("content-type"))
c.check(hdr.get("idempotency-key") == "key-123", "the client's Idempotency-Key passes through",
        hdr.get("idempotency-key"))
c.check("x-hop" not in hdr and "keep-alive" not in hdr,
        "hop-by-hop headers (Keep-Alive, those named by Connection) are removed",
        [k for k in names if k in ("x-hop", "keep-alive")])

c.check(names.count("x-sluice-request-id") == 1, "exactly one X-Sluice-Request-Id",
        names.count("x-sluice-request-id"))
c.check(hdr.get("x-sluice-request-id") == rid, "X-Sluice-Request-Id is the id of the 202",
        (hdr.get("x-sluice-request-id"), rid))
c.check(names.count("x-sluice-attempt") == 1 and hdr.get("x-sluice-attempt") == "1",
        "X-Sluice-Attempt: 1 (once)", [v for k, v in e["headers"] if k.lower() == "x-sluice-attempt"])
enq = hdr.get("x-sluice-enqueued-at") or ""
c.check(names.count("x-sluice-enqueued-at") == 1 and RFC3339_MS_RE.match(enq),
        "X-Sluice-Enqueued-At is RFC 3339 UTC with milliseconds (once)",
        [v for k, v in e["headers"] if k.lower() == "x-sluice-enqueued-at"])
if RFC3339_MS_RE.match(enq):
    te = datetime.datetime.strptime(enq, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    c.check(t_send - 1 <= te <= t_send + 1, "X-Sluice-Enqueued-At is when the PUT was received",
            (enq, t_send))
qw = hdr.get("x-sluice-queue-wait")
try:
    qwf = float(qw)
except (TypeError, ValueError):
    qwf = None
c.check(names.count("x-sluice-queue-wait") == 1 and qwf is not None and 0 <= qwf <= (t_arr - t_send) + 0.5,
        "X-Sluice-Queue-Wait is a number of seconds, at most the time the PUT waited (%.2fs)"
        % (t_arr - t_send), [v for k, v in e["headers"] if k.lower() == "x-sluice-queue-wait"])
c.check("x-sluice-anything" not in hdr, "a client's X-Sluice-Anything does not reach the backend (replay)",
        hdr.get("x-sluice-anything"))
xff = hdr.get("x-forwarded-for") or ""
c.check(xff.startswith("203.0.113.7") and "127.0.0.1" in xff,
        "X-Forwarded-For is the client's, with the client address appended as live", xff)

live = by_seq(read_log(rec_log)).get(1, [{}])[0]
lh = live.get("h", {})
leaked = [k for k, _ in live.get("headers", []) if k.lower().startswith("x-sluice-")]
c.check(not leaked, "client-sent X-Sluice-* headers do not reach the backend (live)",
        [(k, lh.get(k.lower())) for k in leaked])
lxff = lh.get("x-forwarded-for") or ""
c.check(lxff.startswith("198.51.100.1") and "127.0.0.1" in lxff, "live X-Forwarded-For appended", lxff)
c.done()
EOF
e2e_sluice_stop
