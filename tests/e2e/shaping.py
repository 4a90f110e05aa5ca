"""Helpers for the shaping end-to-end tests (tests/e2e/test_shaping_*.sh).

Two programs and a small client library:

    python3 shaping.py backend --port 0 --log FILE [--capacity N] [--service-ms MS]
                               [--status CODE] [--retry-after S] [--first N --first-status CODE]
        A recording HTTP/1.1 backend. It prints "listening on 127.0.0.1:PORT" and appends one
        JSON line per request to FILE: arrival time (time.time(), taken when the head has been
        read, before the request waits for a worker), method, target, headers, body length and
        digest, the X-Test-Seq header, and the status it answered. At most <capacity> requests
        are served at once, each for <service-ms>. The status is <status> (default 200),
        or the request's X-Test-Status header; with --first N, the first N requests are answered
        <first-status> (a rate limit for a while). Control requests (not logged):
        /_ctl/status/NNN changes <status>, /_ctl/retry-after/S the Retry-After sent with 429
        and 5xx (0: none), /_ctl/service/MS the service time.

    python3 shaping.py burst --port P --path PATH --rate R --count N --out FILE [--conns C]
                             [--header "Name: value"]... [--body-bytes B]
        An open-model load generator: sends N POSTs, request i at start + i/R whatever the
        answers (C keep-alive connections), each with "X-Test-Seq: i" and a JSON body naming i;
        writes one JSON line per request (seq, send and answer times, status, headers, body) to
        FILE and prints a summary line "burst: sent N ... statuses {...}".

The library part (from shaping import *) wraps single requests, the admin API, Prometheus
text and the backend's log, and fails the test through e2e_http.fail with a message that says
what was expected and what came. Every wait is bounded.
"""

import argparse
import hashlib
import http.client
import http.server
import json
import os
import queue
import re
import socket
import sys
import threading
import time

from e2e_http import expect, fail

__all__ = [
    "Resp", "request", "post", "get", "admin", "metrics", "metric", "upstream",
    "read_log", "by_seq", "wait_for", "burst", "load_json", "save_json", "ID_RE",
    "RFC3339_MS_RE", "check_accept_body", "log", "expect", "fail", "windows_max", "Checks",
    "Poller", "backlog", "json", "re", "time", "max_gap",
]

ID_RE = re.compile(r"^[0-9a-f]{32}$")
RFC3339_MS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def log(msg):
    print("e2e: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- client


class Resp:
    def __init__(self, status, headers, body, elapsed, error=None):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body
        self.elapsed = elapsed
        self.error = error

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            fail("expected a JSON body, got %r (status %d)" % (self.body[:300], self.status))

    def __repr__(self):
        if self.error:
            return "<no response: %s>" % self.error
        return "<%d %r %r>" % (self.status, self.headers, self.body[:300])


def request(port, method, path, headers=None, body=b"", timeout=15.0):
    """One request on a fresh connection; returns a Resp (status 0 and .error when no answer)."""
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
        if method in ("POST", "PUT", "PATCH") or body:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                     headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.getheaders(), data, time.time() - t0)
    except (OSError, http.client.HTTPException) as e:
        return Resp(0, [], b"", time.time() - t0, error=repr(e))
    finally:
        conn.close()


def post(port, path, headers=None, body=None, **kw):
    if body is None:
        body = json.dumps({"path": path}).encode()
    return request(port, "POST", path, headers, body, **kw)


def get(port, path, headers=None, **kw):
    return request(port, "GET", path, headers, b"", **kw)


def admin(port, method, path, token=None, expect_status=None):
    """A request to the admin listener; with <expect_status> (a code, or "2xx"), fails unless
    it answers that."""
    hdrs = {"Authorization": "Bearer " + token} if token else {}
    r = request(port, method, path, hdrs, b"")
    if expect_status == "2xx":
        expect(200 <= r.status < 300, "%s %s on the admin listener answers 2xx" % (method, path), r)
    elif expect_status is not None:
        expect(r.status == expect_status, "%s %s on the admin listener answers %d"
               % (method, path, expect_status), r)
    return r


def upstream(admin_port, name, token=None):
    """The entry of upstream <name> in GET /admin/upstreams."""
    r = admin(admin_port, "GET", "/admin/upstreams", token, expect_status=200)
    for u in r.json().get("upstreams", []):
        if u.get("name") == name:
            return u
    fail("GET /admin/upstreams lists upstream %r: got %r" % (name, r.body[:500]))


def backlog(admin_port, name, token=None):
    """Records of upstream <name> not yet delivered (ready + inflight + delayed), from the admin
    API, or from sluice_backlog_requests when the API does not answer; None if neither does."""
    hdrs = {"Authorization": "Bearer " + token} if token else {}
    r = request(admin_port, "GET", "/admin/upstreams", hdrs, b"", timeout=5)
    if r.status == 200:
        try:
            for u in json.loads(r.body).get("upstreams", []):
                if u.get("name") == name:
                    return sum(int(u.get(k) or 0) for k in ("ready", "inflight", "delayed"))
        except (ValueError, TypeError, AttributeError):
            pass
    r = request(admin_port, "GET", "/metrics", {}, b"", timeout=5)
    if r.status != 200:
        return None
    total, found = 0, False
    for line in r.body.decode("utf-8", "replace").splitlines():
        m = _SAMPLE_RE.match(line)
        if m and m.group(1) == "sluice_backlog_requests":
            lab = dict(_LABEL_RE.findall(m.group(3) or ""))
            if lab.get("upstream") == name and lab.get("state") in ("ready", "inflight", "delayed"):
                total += float(m.group(4))
                found = True
    return int(total) if found else None


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(admin_port):
    """GET /metrics: a list of (name, {label: value}, float)."""
    r = get(admin_port, "/metrics")
    expect(r.status == 200, "GET /metrics answers 200", r)
    out = []
    for line in r.body.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        labels = dict(_LABEL_RE.findall(m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            pass
    return out


def metric(admin_port, name, samples=None, **labels):
    """Sum of the samples of <name> whose labels include <labels>; None if there is none."""
    if samples is None:
        samples = metrics(admin_port)
    total, found = 0.0, False
    for n, lab, v in samples:
        if n == name and all(lab.get(k) == str(val) for k, val in labels.items()):
            total += v
            found = True
    return total if found else None


def wait_for(cond, timeout, what, interval=0.05, state=None):
    """Calls <cond> until it returns something true (which is returned); fails after <timeout> s,
    saying what <state>() (if given) returns then."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() >= deadline:
            extra = ""
            if state is not None:
                try:
                    extra = "; state then: %r" % (state(),)
                except BaseException as e:  # noqa: BLE001 - diagnostics only
                    extra = "; state unavailable: %r" % e
            fail("timed out after %gs waiting for: %s%s" % (timeout, what, extra))
        time.sleep(interval)


def check_accept_body(r, what, prefix="/_sluice/requests/", held=False):
    """Checks that <r> is the 202 of a spilled request (contract) and returns its JSON. With
    <held> the drain is paused or its circuit open, so eta_seconds must be null."""
    expect(r.status == 202, what + ": status 202", r)
    ct = r.header("Content-Type") or ""
    expect(ct.startswith("application/json"), what + ": Content-Type application/json", ct)
    j = r.json()
    expect(isinstance(j.get("id"), str) and ID_RE.match(j["id"]),
           what + ": 202 body has an id of 32 lowercase hex digits", j)
    expect(j.get("status") == "queued" or j.get("status") in ("in_flight", "delivered", "dead"),
           what + ": 202 body has a status", j)
    if j.get("not_before") is not None:
        # Delayed: due at a time, not at a place in the line.
        expect(j.get("position", 0) is None and isinstance(j["not_before"], str),
               what + ": a delayed 202 has position null and a not_before time", j)
    else:
        expect(isinstance(j.get("position"), int) and not isinstance(j.get("position"), bool),
               what + ": 202 body has an integer position", j)
    if held:
        expect("eta_seconds" in j and j["eta_seconds"] is None,
               what + ": 202 body has eta_seconds null (the drain is held)", j)
    else:
        expect(isinstance(j.get("eta_seconds"), (int, float)) and not isinstance(j.get("eta_seconds"), bool),
               what + ": 202 body has a number eta_seconds", j)
    loc = r.header("Location")
    expect(loc == prefix + j["id"], what + ": Location is %s<id>" % prefix, loc)
    return j


class Checks:
    """Collects failed checks so that one run reports all of them; done() fails if any did."""

    def __init__(self):
        self.failed = []

    def check(self, cond, what, got=None):
        if cond:
            log("ok: " + what)
        else:
            msg = what + ("" if got is None else ": got " + repr(got))
            print("e2e: FAIL: " + msg, file=sys.stderr, flush=True)
            self.failed.append(msg)
        return cond

    def done(self):
        if self.failed:
            fail("%d check(s) failed: %s" % (len(self.failed), "; ".join(self.failed)))


class Poller(threading.Thread):
    """Samples fn() every <interval> s in the background: .samples is a list of (time, value)."""

    def __init__(self, fn, interval=0.1):
        super().__init__(daemon=True)
        self.fn, self.interval, self.samples = fn, interval, []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            t = time.time()
            try:
                v = self.fn()
            except Exception as e:  # noqa: BLE001 - a sample that failed is recorded as such
                v = e
            self.samples.append((t, v))
            self.stopped.wait(max(0.0, self.interval - (time.time() - t)))

    def stop(self):
        self.stopped.set()
        self.join(5)


def save_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


def load_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- backend log


def read_log(path):
    """The backend's log: a list of dicts (t, method, path, headers, body_len, body_sha, seq, status)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):
                    e = json.loads(line)
                    e["h"] = {k.lower(): v for k, v in e["headers"]}
                    out.append(e)
    except FileNotFoundError:
        pass
    return out


def by_seq(entries):
    """{seq: [entries]} for the entries that carry X-Test-Seq."""
    d = {}
    for e in entries:
        if e.get("seq") is not None:
            d.setdefault(e["seq"], []).append(e)
    return d


def windows_max(times, width=1.0):
    """The most of <times> that fall in any half-open window [t, t + width), and where."""
    times = sorted(times)
    best, at, j = 0, None, 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, times[j]
    return best, at


def max_gap(times):
    """The longest pause between consecutive <times>, and when it started: (gap, start)."""
    t = sorted(times)
    best = (0.0, t[0] if t else None)
    for a, b in zip(t, t[1:]):
        if b - a > best[0]:
            best = (b - a, a)
    return best


# ---------------------------------------------------------------- burst


def burst(port, path, rate, count, conns=32, headers=None, body_bytes=0, timeout=15.0):
    """Sends <count> POSTs at <rate>/s (open model); returns the results in seq order."""
    headers = dict(headers or {})
    jobs = queue.Queue()
    results = [None] * count
    pad = "x" * max(0, body_bytes - 40)

    def worker():
        c = None
        while True:
            item = jobs.get()
            if item is None:
                break
            i = item
            body = json.dumps({"seq": i, "pad": pad}).encode()
            h = dict(headers)
            h["X-Test-Seq"] = str(i)
            h["Content-Type"] = "application/json"
            t0 = time.time()
            res = {"seq": i, "t_send": t0}
            for attempt in (1, 2):
                try:
                    if c is None:
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                    c.request("POST", path, body=body, headers=h)
                    r = c.getresponse()
                    data = r.read()
                    res.update(status=r.status, headers=r.getheaders(),
                               body=data.decode("utf-8", "replace"), t_done=time.time())
                    if (r.getheader("Connection") or "").lower() == "close":
                        c.close()
                        c = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    if c is not None:
                        c.close()
                        c = None
                    # A keep-alive connection the server had closed: retry once on a new one,
                    # but only if nothing could have reached it (no response and quick failure).
                    if attempt == 1 and isinstance(e, (http.client.RemoteDisconnected,
                                                       BrokenPipeError, ConnectionResetError)) \
                            and time.time() - t0 < 0.05:
                        continue
                    res.update(status=0, error=repr(e), headers=[], body="", t_done=time.time())
                    break
            results[i] = res

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
    for t in threads:
        t.start()
    start = time.time() + 0.05
    for i in range(count):
        due = start + i / rate
        d = due - time.time()
        if d > 0:
            time.sleep(d)
        jobs.put(i)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout + 5)
    for i, r in enumerate(results):
        if r is None:
            results[i] = {"seq": i, "status": 0, "error": "not sent or no answer", "headers": [],
                          "body": "", "t_send": 0, "t_done": 0}
    return results


def _burst_main(a):
    hdrs = {}
    for h in a.header or []:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    res = burst(a.port, a.path, a.rate, a.count, a.conns, hdrs, a.body_bytes)
    with open(a.out, "w") as f:
        for r in res:
            f.write(json.dumps(r) + "\n")
    st = {}
    for r in res:
        st[r["status"]] = st.get(r["status"], 0) + 1
    span = max(r["t_send"] for r in res) - min(r["t_send"] for r in res) if res else 0
    print("burst: sent %d in %.2fs, statuses %s" % (len(res), span, json.dumps(st, sort_keys=True)))


# ---------------------------------------------------------------- recording backend


class _State:
    def __init__(self, a):
        self.lock = threading.Lock()
        self.log = open(a.log, "a")
        self.n = 0
        self.status = a.status
        self.retry_after = a.retry_after
        self.service_ms = a.service_ms
        self.first, self.first_status = a.first, a.first_status
        self.sem = threading.BoundedSemaphore(a.capacity)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shaping-backend"
    state = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self):
        t = time.time()
        st = self.state
        body = self._read_body()
        if self.path.startswith("/_ctl/"):
            parts = self.path.split("/")
            with st.lock:
                if parts[2] == "status":
                    st.status = int(parts[3])
                elif parts[2] == "retry-after":
                    st.retry_after = int(parts[3])
                elif parts[2] == "service":
                    st.service_ms = int(parts[3])
            self._reply(200, b'{"ok":true}')
            return
        status = st.status
        ts = self.headers.get("X-Test-Status")
        if ts and ts.isdigit():
            status = int(ts)
        seq = self.headers.get("X-Test-Seq")
        with st.lock:
            st.n += 1
            n = st.n
            if n <= st.first:
                status = st.first_status
            entry = {
                "t": t, "n": n, "method": self.command, "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": len(body), "body_sha": hashlib.sha256(body).hexdigest()[:16],
                "seq": int(seq) if seq and seq.isdigit() else None, "status": status,
            }
            retry_after, service_ms = st.retry_after, st.service_ms
            if not (status >= 500 or status == 429):
                retry_after = 0
            entry["retry_after"] = retry_after
            st.log.write(json.dumps(entry) + "\n")
            st.log.flush()
        with st.sem:
            if service_ms:
                time.sleep(service_ms / 1000.0)
        extra = [("X-Backend-N", str(n))]
        if retry_after:
            extra.append(("Retry-After", str(retry_after)))
        out = json.dumps({"backend": "rec", "n": n, "method": self.command,
                          "path": self.path}).encode()
        self._reply(status, out, extra)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True


def _backend_main(a):
    _Handler.state = _State(a)
    srv = _Server(("127.0.0.1", a.port), _Handler)
    print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser(prog="shaping.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--port", type=int, default=0)
    b.add_argument("--log", required=True)
    b.add_argument("--capacity", type=int, default=64)
    b.add_argument("--service-ms", type=int, default=0)
    b.add_argument("--status", type=int, default=200)
    b.add_argument("--retry-after", type=int, default=0)
    b.add_argument("--first", type=int, default=0)
    b.add_argument("--first-status", type=int, default=429)
    u = sub.add_parser("burst")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--path", default="/")
    u.add_argument("--rate", type=float, required=True)
    u.add_argument("--count", type=int, required=True)
    u.add_argument("--conns", type=int, default=32)
    u.add_argument("--out", required=True)
    u.add_argument("--header", action="append")
    u.add_argument("--body-bytes", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "backend":
        _backend_main(a)
    else:
        _burst_main(a)


if __name__ == "__main__":
    main()
