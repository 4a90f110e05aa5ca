"""A headless Chromium driven over the DevTools protocol, for the console's end-to-end test.

    from cdp import Browser
    with Browser(workdir) as b:          # Debian's chromium, a fresh profile in <workdir>
        b.navigate("http://127.0.0.1:9464/ui")
        b.wait_for("document.title === 'x'", 5, "the title")
        b.click("button.pause")          # a real mouse click at the element's centre
        b.screenshot("page.png")
        b.check_no_errors()              # console errors, exceptions, failed loads

Chromium runs with its own session (setsid), so that it and every process it forks (zygote,
renderers, utility processes) form one process group whose id is its PID: close() asks the
browser to quit, and whatever is left of that group after 5 s is killed by that id. SIGTERM
and SIGINT to the test end it through the same path. The PID is in <workdir>/chromium.pid
until close() has reaped it, for a caller whose driver was killed outright to finish the job. Every wait is bounded: a protocol call
gets <timeout> seconds for its answer.

The page's trouble is recorded as it comes: Runtime.exceptionThrown, console.error() and
console.assert() (Runtime.consoleAPICalled) and Log.entryAdded at level "error" (failed loads,
CSP violations, network errors). take_errors() hands them over, so that a test can allow the
ones it caused on purpose (a 401 it provoked) and fail on the rest.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import websocket  # Debian's python3-websocket

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # run as root (CI), which the sandbox refuses
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]


class CdpError(Exception):
    pass


def _find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise CdpError("chromium not found: install Debian's 'chromium' (scripts/install-deps test)")


class Browser:
    def __init__(self, workdir, width=1280, height=900, timeout=10.0, start_timeout=30.0):
        self.timeout = timeout
        self.errors = []
        self.events = []
        self._next_id = 0
        self.ws = None
        self.proc = None
        self.workdir = workdir
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
        self.log_path = os.path.join(workdir, "chromium.log")
        self.pid_path = os.path.join(workdir, "chromium.pid")
        self._old_handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._start(width, height, start_timeout)
        except BaseException:
            self.close()
            raise

    def _on_signal(self, signum, frame):
        raise SystemExit(128 + signum)

    def _start(self, width, height, start_timeout):
        log = open(self.log_path, "ab")
        cmd = [_find_chromium()] + CHROMIUM_FLAGS + [
            "--user-data-dir=" + self.profile,
            "--window-size=%d,%d" % (width, height),
            "about:blank",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        with open(self.pid_path, "w") as f:
            f.write("%d\n" % self.proc.pid)
        # Chromium writes the port it bound (and its browser target's path) to this file.
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + start_timeout
        port = None
        while port is None:
            if self.proc.poll() is not None:
                raise CdpError("chromium exited with status %s before listening; see %s"
                               % (self.proc.returncode, self.log_path))
            if time.time() > deadline:
                raise CdpError("chromium wrote no DevToolsActivePort within %gs" % start_timeout)
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    port = int(first)
            except OSError:
                pass
            if port is None:
                time.sleep(0.05)
        self.port = port
        page = None
        while page is None:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5) as r:
                targets = json.load(r)
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page is None:
                if time.time() > deadline:
                    raise CdpError("chromium has no page target: %r" % targets)
                time.sleep(0.05)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout,
                                              suppress_origin=True)
        for domain in ("Runtime", "Log", "Page"):
            self.call(domain + ".enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # ---- the protocol

    def _record(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        self.events.append(msg)
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = (d.get("exception") or {}).get("description") or d.get("text")
            self.errors.append({"kind": "exception", "text": text, "url": d.get("url", "")})
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.errors.append({"kind": "console." + p["type"], "text": args, "url": ""})
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append({"kind": "log/" + e.get("source", ""), "text": e.get("text", ""),
                                "url": e.get("url", "")})

    def _recv(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise CdpError("no message from chromium in time")
        self.ws.settimeout(left)
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise CdpError("no message from chromium in time") from None

    def call(self, method, **params):
        """Sends one command and returns its result; events that come first are recorded."""
        self._next_id += 1
        mid = self._next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.time() + self.timeout
        while True:
            msg = self._recv(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CdpError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self._record(msg)

    def pump(self, seconds=0.0):
        """Records the events that arrive within <seconds> (at least those already sent)."""
        deadline = time.time() + seconds
        while True:
            self.ws.settimeout(max(0.01, deadline - time.time()))
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                return
            if "method" in msg:
                self._record(msg)
            if time.time() >= deadline and seconds > 0:
                return

    # ---- the page

    def evaluate(self, expr, await_promise=False):
        """The value of JavaScript expression <expr> in the page (JSON-able values only)."""
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=await_promise)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CdpError("evaluate %r: %s" % (expr[:80], (d.get("exception") or {})
                                                .get("description") or d.get("text")))
        return r.get("result", {}).get("value")

    def navigate(self, url, timeout=15.0):
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout, "the page to load")

    def wait_for(self, expr, timeout, what):
        """Evaluates <expr> every 100 ms until it is truthy; returns its value. Raises after
        <timeout> seconds, with what <expr> gave last."""
        deadline = time.time() + timeout
        last = None
        while True:
            last = self.evaluate(expr)
            if last:
                return last
            if time.time() >= deadline:
                raise CdpError("timed out after %gs waiting for %s (%s gave %r)"
                               % (timeout, what, expr[:120], last))
            self.pump(0.1)

    def click(self, selector):
        """A real click (mouse pressed and released) at the centre of the first element that
        matches <selector>, scrolled into view; fails if it is hidden or covered."""
        box = self.evaluate("""(() => {
            const el = document.querySelector(%s);
            if (!el) return null;
            el.scrollIntoView({block: 'center'});
            const r = el.getBoundingClientRect();
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const top = document.elementFromPoint(x, y);
            return {x, y, w: r.width, h: r.height, hit: !!top && (top === el || el.contains(top))};
        })()""" % json.dumps(selector))
        if box is None:
            raise CdpError("click: nothing matches %s" % selector)
        if box["w"] == 0 or box["h"] == 0 or not box["hit"]:
            raise CdpError("click: %s is hidden or covered: %r" % (selector, box))
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                      button="left", clickCount=1)

    def screenshot(self, path, full_page=True):
        """Writes a PNG of the page to <path>: with <full_page>, of its content from the top,
        however long (not the empty viewport below it), else of the viewport."""
        params = {"format": "png"}
        if full_page:
            size = self.evaluate("""[document.documentElement.clientWidth,
                Math.ceil(Math.max(0, ...[...document.body.children].map(
                    (e) => e.getBoundingClientRect().bottom + window.scrollY)))]""")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(base64.b64decode(data))
        os.replace(tmp, path)

    def take_errors(self):
        """The errors recorded so far (see the module's comment), which are then forgotten."""
        self.pump(0)
        errs, self.errors = self.errors, []
        return errs

    # ---- the end

    def close(self):
        """Quits chromium and kills by its process group id whatever is left. Idempotent."""
        if self.ws is not None:
            try:
                self.ws.settimeout(2)
                self.ws.send(json.dumps({"id": 0, "method": "Browser.close", "params": {}}))
            except Exception:  # noqa: BLE001 - it may be gone already
                pass
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001
                pass
            self.ws = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
            try:
                os.unlink(self.pid_path)  # reaped: nothing left for a caller's last resort
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
