"""Raw HTTP/1.1 over loopback sockets for the end-to-end tests.

The tests need to see exactly what goes over the wire (pipelined requests in
one write, truncated responses, when a connection is closed), which curl
hides, so they drive sockets through this module:

    from e2e_http import *
    c = Conn(port)
    c.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    r = c.read_response()        # Response, or raises Closed / Timeout
    expect(r.status == 200, "status of GET /", r)

Every read has a timeout; nothing here can hang a test.
"""

import socket
import sys
import time

__all__ = ["Conn", "Response", "Closed", "Timeout", "expect", "fail", "now"]


class Closed(Exception):
    """The peer closed (or reset) the connection; .data holds what came before."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


class Timeout(Exception):
    """Nothing (more) arrived in time; .data holds what came before."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


def now():
    return time.monotonic()


def fail(msg):
    print("e2e: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def expect(cond, what, got=None):
    """Fails the test with <what> (and what was got instead) unless <cond>."""
    if not cond:
        fail(what + ("" if got is None else ": got " + repr(got)))


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []  # (name, value) in order, names as received
        self.body = b""
        self.complete = False  # framing satisfied (CL reached, last chunk, or EOF-delimited)
        self.raw = b""

    def header(self, name):
        """First value of header <name> (case-insensitive), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def __repr__(self):
        return "<%s %d %s, %d body bytes%s>" % (
            self.version, self.status, self.reason, len(self.body),
            "" if self.complete else ", INCOMPLETE")


class Conn:
    """One client connection with a receive buffer (responses may share a read)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, deadline):
        """Reads more into the buffer; raises Closed at EOF/reset, Timeout at deadline."""
        if self.eof:
            raise Closed("connection closed", self.buf)
        left = deadline - now()
        if left <= 0:
            raise Timeout("timed out", self.buf)
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("timed out", self.buf)
        except ConnectionResetError:
            self.eof = True
            raise Closed("connection reset", self.buf)
        if not d:
            self.eof = True
            raise Closed("connection closed", self.buf)
        self.buf += d

    def _take_line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read_response(self, timeout=5.0, head=False, partial_ok=False):
        """Reads one response (a 1xx counts as one). <head>: the request was a
        HEAD, so there is no body whatever the headers say. Raises Closed or
        Timeout if the response is incomplete, unless <partial_ok>: then
        returns it with .complete False."""
        deadline = now() + timeout
        r = Response()
        start = len(self.buf)
        try:
            # Headers.
            while b"\r\n\r\n" not in self.buf:
                self._fill(deadline)
            hdr, self.buf = self.buf.split(b"\r\n\r\n", 1)
            r.raw = hdr + b"\r\n\r\n"
            lines = hdr.split(b"\r\n")
            parts = lines[0].decode("latin-1").split(" ", 2)
            r.version = parts[0]
            r.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
            r.reason = parts[2] if len(parts) > 2 else ""
            for l in lines[1:]:
                k, _, v = l.decode("latin-1").partition(":")
                r.headers.append((k, v.strip()))
            # Body.
            te = (r.header("transfer-encoding") or "").lower()
            cl = r.header("content-length")
            if head or r.status // 100 == 1 or r.status in (204, 304):
                pass
            elif "chunked" in te:
                while True:
                    size_line = self._take_line(deadline)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while self._take_line(deadline) != b"":
                            pass
                        break
                    r.body += self._take(size, deadline)
                    if self._take(2, deadline) != b"\r\n":
                        raise Closed("bad chunk framing", r.body)
            elif cl is not None:
                r.body = self._take(int(cl), deadline)
            else:
                # Close-delimited.
                try:
                    while True:
                        self._fill(deadline)
                except Closed:
                    r.body, self.buf = self.buf, b""
            r.complete = True
        except (Closed, Timeout) as e:
            if not partial_ok:
                raise
            if not r.raw:
                r.raw = self.buf[start:]
            if r.status and not r.body:
                r.body = self.buf
            self.buf = b""
            r.complete = False
            r.error = str(e)
        return r

    def read_until_close(self, timeout=5.0):
        """Reads until EOF/reset. Returns (data, closed, seconds): closed is
        False if the connection was still open after <timeout>."""
        t0 = now()
        deadline = t0 + timeout
        try:
            while True:
                self._fill(deadline)
        except Closed:
            data, self.buf = self.buf, b""
            return data, True, now() - t0
        except Timeout:
            data, self.buf = self.buf, b""
            return data, False, now() - t0

    def wait_closed(self, timeout=5.0):
        """True if the peer closes within <timeout> without sending anything
        more than whitespace; fails the test if it sends data."""
        data, closed, _ = self.read_until_close(timeout)
        expect(data.strip() == b"", "no more data before the close", data[:200])
        return closed
