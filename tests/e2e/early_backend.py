"""A keep-alive HTTP/1.1 backend that answers before it has read the request body.

    python3 early_backend.py --log FILE [--status CODE] [--delay-ms MS] [--rcvbuf BYTES]

Backends do this with an early 413, 401 or 200: the response goes out as soon as the head is
read, and the body is read (and dropped) afterwards so that the connection can serve the next
request. This one answers <status> (default 200, body "early", keep-alive) right after the
head, waits <delay-ms> so that the answer reaches the client while the body is still on its
way, then reads the whole body and appends one JSON line per request to FILE:

    {"id": X-Test-Id, "request_id": X-Sluice-Request-Id or null, "method", "target",
     "length": Content-Length, "got": body bytes read, "sha256": digest of those bytes}

A head that does not parse (the bytes of some other request, or of the middle of a body) is
logged as {"bad": reason, "head": its first bytes} and the connection is closed. A small
receive buffer (<rcvbuf>) keeps the sender's writes pending for bodies above a few KiB.

It prints "listening on 127.0.0.1:PORT" once it accepts connections.
"""

import argparse
import hashlib
import json
import re
import socket
import sys
import threading
import time

REQUEST_LINE = re.compile(rb"^([A-Z]+) (/\S*) HTTP/1\.[01]$")


class Log:
    def __init__(self, path):
        self.f = open(path, "a")
        self.lock = threading.Lock()

    def write(self, entry):
        with self.lock:
            self.f.write(json.dumps(entry) + "\n")
            self.f.flush()


def serve(conn, args, log):
    buf = b""
    conn.settimeout(60)
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                if len(buf) > 64 * 1024:
                    log.write({"bad": "head too long", "head": buf[:200].decode("latin-1")})
                    return
                d = conn.recv(65536)
                if not d:
                    if buf:
                        log.write({"bad": "closed inside a head",
                                   "head": buf[:200].decode("latin-1")})
                    return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            m = REQUEST_LINE.match(lines[0])
            if m is None:
                log.write({"bad": "not a request line", "head": head[:200].decode("latin-1")})
                return
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    log.write({"bad": "not a header line", "head": head[:200].decode("latin-1")})
                    return
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            length = int(headers.get("content-length", "0"))
            conn.sendall(b"HTTP/1.1 %d Early\r\nContent-Length: 5\r\n\r\nearly" % args.status)
            time.sleep(args.delay_ms / 1000.0)
            h = hashlib.sha256()
            take = min(length, len(buf))
            h.update(buf[:take])
            buf = buf[take:]
            got = take
            while got < length:
                d = conn.recv(min(256 * 1024, length - got))
                if not d:
                    break
                h.update(d)
                got += len(d)
            log.write({"id": headers.get("x-test-id"),
                       "request_id": headers.get("x-sluice-request-id"),
                       "method": m.group(1).decode(), "target": m.group(2).decode(),
                       "length": length, "got": got, "sha256": h.hexdigest()})
            if got < length:
                return
    except OSError as e:
        log.write({"bad": "socket error: %s" % e, "head": ""})
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--delay-ms", type=int, default=30)
    ap.add_argument("--rcvbuf", type=int, default=16384)
    args = ap.parse_args()
    log = Log(args.log)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    print("listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, args, log), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
