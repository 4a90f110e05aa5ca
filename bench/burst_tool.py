#!/usr/bin/env python3
"""Helpers of bench/burst_bench.sh: sampling during a run, waiting for the drain, and the report.

    burst_tool.py sample --out FILE --stop FILE --backend PORT --kind KIND --stats PORT
        Every 100 ms (until FILE --stop exists) appends to --out one tab-separated line:
            t  delivered  arrivals  backlog  rejected
        t: Unix time in seconds; delivered: the demo backend's /_stats request
        counter; arrivals, backlog and rejected as the proxy reports them (KIND sluice: admin
        /metrics, sluice_requests_total, sluice_backlog_requests ready+inflight+delayed, outcome
        rejected; nginx: stub_status requests and Writing; haproxy: the stats CSV, frontend
        req_tot, backend scur (queued included), frontend hrsp_5xx+denied). A value it cannot read is "nan".

    burst_tool.py wait-drained --samples FILE --timeout S
        Returns once the last samples show an empty backlog and no delivery for 1 s (or after
        S seconds, exit status 1).

    burst_tool.py summary --dir DIR --system NAME --rate R --arrivals A --duration D
        Reads DIR/NAME.samples, DIR/NAME.httperf.* (httperf outputs), DIR/NAME.metrics (sluice),
        DIR/NAME.qwait (queue waits in seconds, one a line, nginx/haproxy), DIR/NAME.rss and
        DIR/NAME.t0 (the Unix time at which httperf started) and prints one JSON line of
        results; writes DIR/NAME.dat (t arrivals/s deliveries/s backlog rejected/s, per 0.5 s) for
        the plot.

    burst_tool.py table --dir DIR SYSTEM...
        Prints the results table (Markdown) of the given systems from DIR/SYSTEM.json.
"""

import argparse
import http.client
import json
import math
import os
import re
import sys
import time


class Getter:
    """Keep-alive GETs of one loopback port; returns the body or None."""

    def __init__(self, port):
        self.port, self.c = port, None

    def get(self, path):
        for _ in (1, 2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                self.c.request("GET", path)
                r = self.c.getresponse()
                return r.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                if self.c is not None:
                    self.c.close()
                self.c = None
        return None


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prom(text):
    out = []
    for line in (text or "").splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if m:
            try:
                out.append((m.group(1), dict(LABEL_RE.findall(m.group(3) or "")), float(m.group(4))))
            except ValueError:
                pass
    return out


def sluice_point(g):
    s = prom(g.get("/metrics"))
    if not s:
        return math.nan, math.nan, math.nan
    arr = sum(v for n, l, v in s if n == "sluice_requests_total")
    back = sum(v for n, l, v in s if n == "sluice_backlog_requests"
               and l.get("state") in ("ready", "inflight", "delayed"))
    rej = sum(v for n, l, v in s if n == "sluice_requests_total" and l.get("outcome") == "rejected")
    return arr, back, rej


class NginxPoint:
    def __init__(self, g):
        self.g, self.own = g, 0

    def __call__(self):
        t = self.g.get("/stub_status")
        self.own += 1
        if not t:
            return math.nan, math.nan, math.nan
        m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", t)
        w = re.search(r"Writing:\s*(\d+)", t)
        if not m or not w:
            return math.nan, math.nan, math.nan
        # The status requests themselves count as requests and one of them is writing.
        return int(m.group(3)) - self.own, int(w.group(1)) - 1, math.nan


def haproxy_point(g):
    t = g.get("/stats;csv")
    if not t:
        return math.nan, math.nan, math.nan
    lines = t.splitlines()
    head = lines[0].lstrip("# ").split(",")
    idx = {k: i for i, k in enumerate(head)}
    arr = back = rej = math.nan
    for line in lines[1:]:
        f = line.split(",")
        if len(f) < len(head):
            continue
        if f[0] == "fe" and f[1] == "FRONTEND":
            arr = float(f[idx["req_tot"]] or 0)
            rej = float(f[idx["hrsp_5xx"]] or 0)
        if f[0] == "be" and f[1] == "BACKEND":
            back = float(f[idx["scur"]] or 0)  # sessions on the backend, queued ones included
    return arr, back, rej


def cmd_sample(a):
    backend = Getter(a.backend)
    stats = Getter(a.stats)
    point = {"sluice": lambda: sluice_point(stats), "nginx": NginxPoint(stats),
             "haproxy": lambda: haproxy_point(stats)}[a.kind]
    t0 = time.time()
    n = 0
    with open(a.out, "w") as f:
        while not os.path.exists(a.stop):
            t = time.time()
            b = backend.get("/_stats")
            try:
                delivered = json.loads(b)["requests"] if b else math.nan
            except (ValueError, KeyError):
                delivered = math.nan
            arr, back, rej = point()
            f.write("%.3f\t%s\t%s\t%s\t%s\n" % (t, delivered, arr, back, rej))
            f.flush()
            n += 1
            time.sleep(max(0.0, t0 + n * 0.1 - time.time()))


def read_samples(path):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.split("\t")
            if len(p) == 5:
                rows.append([float(x) for x in p])
    return rows


def cmd_wait_drained(a):
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        time.sleep(0.5)
        rows = read_samples(a.samples)
        last = [r for r in rows if r[0] >= rows[-1][0] - 1.0] if rows else []
        if len(last) >= 8 and all(r[3] == 0 or math.isnan(r[3]) for r in last[-3:]) \
                and last[0][1] == last[-1][1]:
            return 0
    return 1


def parse_httperf(paths):
    tot = {"requests": 0, "replies": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "errors": 0,
           "client-timo": 0, "fd-unavail": 0, "duration": 0.0}
    for p in paths:
        t = open(p).read()
        m = re.search(r"Total: connections \d+ requests (\d+) replies (\d+) test-duration ([\d.]+)", t)
        if m:
            tot["requests"] += int(m.group(1))
            tot["replies"] += int(m.group(2))
            tot["duration"] = max(tot["duration"], float(m.group(3)))
        m = re.search(r"Reply status: 1xx=\d+ 2xx=(\d+) 3xx=(\d+) 4xx=(\d+) 5xx=(\d+)", t)
        if m:
            for k, v in zip(("2xx", "3xx", "4xx", "5xx"), m.groups()):
                tot[k] += int(v)
        m = re.search(r"Errors: total (\d+) client-timo (\d+)", t)
        if m:
            tot["errors"] += int(m.group(1))
            tot["client-timo"] += int(m.group(2))
        m = re.search(r"fd-unavail (\d+)", t)
        if m:
            tot["fd-unavail"] += int(m.group(1))
    return tot


def hist_quantiles(samples, name, qs):
    """Quantiles (linear within buckets) of Prometheus histogram <name> summed over its series."""
    buckets = {}
    for n, l, v in samples:
        if n == name + "_bucket":
            le = l.get("le")
            le = math.inf if le == "+Inf" else float(le)
            buckets[le] = buckets.get(le, 0) + v
    if not buckets:
        return [None] * len(qs)
    les = sorted(buckets)
    total = buckets[les[-1]]
    out = []
    for q in qs:
        if total == 0:
            out.append(None)
            continue
        rank, prev_le, prev_c = q * total, 0.0, 0.0
        for le in les:
            c = buckets[le]
            if c >= rank:
                if le == math.inf:
                    out.append(prev_le)
                else:
                    out.append(prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1))
                break
            prev_le, prev_c = le, c
    return out


def quantiles(values, qs):
    v = sorted(values)
    if not v:
        return [None] * len(qs)
    return [v[min(len(v) - 1, int(math.ceil(q * len(v))) - 1)] for q in qs]


def cmd_summary(a):
    d, s = a.dir, a.system
    rows = read_samples(os.path.join(d, s + ".samples"))
    t0 = float(open(os.path.join(d, s + ".t0")).read())
    hp = parse_httperf(sorted(os.path.join(d, f) for f in os.listdir(d)
                              if f.startswith(s + ".httperf.")))
    res = {"system": s, "sent": hp["requests"], "accepted": hp["2xx"],
           "rejected": hp["4xx"] + hp["5xx"] + hp["3xx"], "client_errors": hp["errors"],
           "client_timeouts": hp["client-timo"], "fd_unavail": hp["fd-unavail"],
           "load_duration": hp["duration"]}
    # Deliveries: the backend counter from the sample taken just before httperf started.
    base = [r for r in rows if r[0] <= t0]
    d0 = base[-1][1] if base else rows[0][1]
    a0 = base[-1][2] if base else rows[0][2]
    res["delivered"] = int(rows[-1][1] - d0)
    # Drain-rate accuracy: deliveries per second from 1 s after the load started until 1 s
    # before the last delivery (what the system sent on while it had work), at least 2 s.
    final = rows[-1][1]
    last_delivery = min((r[0] for r in rows if r[1] >= final), default=t0)
    res["drained_after"] = round(last_delivery - t0, 1)
    win = [r for r in rows if t0 + 1 <= r[0] <= last_delivery - 1]
    if len(win) >= 2 and win[-1][0] - win[0][0] >= 2:
        res["drain_rate"] = (win[-1][1] - win[0][1]) / (win[-1][0] - win[0][0])
        res["drain_window"] = [round(win[0][0] - t0, 1), round(win[-1][0] - t0, 1)]
    else:
        res["drain_rate"] = None
    res["drain_rate_target"] = a.rate if s != "haproxy" else None
    res["peak_backlog"] = int(max((r[3] for r in rows if not math.isnan(r[3])), default=0))
    # Queue wait.
    qpath = os.path.join(d, s + ".qwait")
    mpath = os.path.join(d, s + ".metrics")
    res["qwait_p50"] = res["qwait_p99"] = None
    if os.path.exists(mpath):
        m = prom(open(mpath).read())
        # sluice delivers in arrival order (FIFO): the k-th request accepted is the k-th one
        # delivered, so its queue wait is the horizontal distance between the cumulative
        # arrival and delivery curves (100 ms resolution). The histogram is a cross-check.
        acc = [(r[0], r[2] - a0) for r in rows if not math.isnan(r[2])]
        dlv = [(r[0], r[1] - d0) for r in rows]
        n_acc = int(acc[-1][1]) if acc else 0
        waits, ia, idl = [], 0, 0
        for k in range(1, n_acc + 1, max(1, n_acc // 2000)):
            while ia < len(acc) and acc[ia][1] < k:
                ia += 1
            while idl < len(dlv) and dlv[idl][1] < k:
                idl += 1
            if ia < len(acc) and idl < len(dlv):
                waits.append(max(0.0, dlv[idl][0] - acc[ia][0]))
        res["qwait_p50"], res["qwait_p99"] = quantiles(waits, (0.5, 0.99))
        res["qwait_source"] = "arrival and delivery curves (FIFO), 100 ms resolution"
        res["qwait_hist_p50_p99"] = hist_quantiles(m, "sluice_queue_wait_seconds", (0.5, 0.99))
        for outcome in ("forwarded", "spilled", "rejected", "error"):
            res[outcome] = int(sum(v for n, l, v in m if n == "sluice_requests_total"
                                   and l.get("outcome") == outcome))
    elif os.path.exists(qpath):
        q = [float(x) for x in open(qpath).read().split() if x not in ("-", "-1")]
        res["qwait_p50"], res["qwait_p99"] = quantiles(q, (0.5, 0.99))
        res["qwait_source"] = "proxy log (%d accepted requests)" % len(q)
    rss = os.path.join(d, s + ".rss")
    res["peak_rss_kib"] = int(open(rss).read().split()[0]) if os.path.exists(rss) else None
    # Plot data: per 0.5 s bins, time since the load started. Rejections per second are what
    # arrived and neither went to the backend nor joined the backlog.
    with open(os.path.join(d, s + ".dat"), "w") as f:
        f.write("# t arrivals/s deliveries/s backlog rejected/s\n")
        prev = None
        for r in rows:
            if r[0] < t0 - 0.5:
                continue
            if prev is None or r[0] - prev[0] >= 0.499:
                if prev is not None:
                    dt = r[0] - prev[0]
                    arr = (r[2] - prev[2]) / dt
                    dl = (r[1] - prev[1]) / dt
                    rej = max(0.0, arr - dl - (r[3] - prev[3]) / dt)
                    cells = [r[0] - t0, arr, dl, r[3], rej]
                    f.write("\t".join("NaN" if math.isnan(v) else "%.2f" % v for v in cells) + "\n")
                prev = r
    print(json.dumps(res))


def fmt(v, spec="%s"):
    return "n/a" if v is None else spec % v


def cmd_table(a):
    print("| system | sent | accepted | rejected | delivered | drain rate (target) | "
          "drained after | peak backlog | queue wait p50 / p99 | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in a.systems:
        p = os.path.join(a.dir, s + ".json")
        if not os.path.exists(p):
            print("| %s | n/a |||||||||" % s)
            continue
        r = json.load(open(p))
        acc = "%d" % r["accepted"]
        if r.get("spilled") is not None:
            acc += " (%d live, %d spilled)" % (r.get("forwarded", 0), r["spilled"])
        rej = "%d" % (r["rejected"] + r["client_errors"])
        if r["client_errors"]:
            rej += " (%d client errors)" % r["client_errors"]
        dr = fmt(r.get("drain_rate"), "%.1f/s")
        if r.get("drain_rate") and r.get("drain_rate_target"):
            dr += " (%g, %+.1f%%)" % (r["drain_rate_target"],
                                      100.0 * (r["drain_rate"] / r["drain_rate_target"] - 1))
        qw = "%s / %s" % (fmt(r.get("qwait_p50"), "%.3fs"), fmt(r.get("qwait_p99"), "%.3fs"))
        print("| %s | %d | %s | %s | %d | %s | %ss | %d | %s | %s |" % (
            s, r["sent"], acc, rej, r["delivered"], dr, r["drained_after"], r["peak_backlog"], qw,
            fmt(r.get("peak_rss_kib") and r["peak_rss_kib"] / 1024.0, "%.1f MiB")))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--out", required=True)
    s.add_argument("--stop", required=True)
    s.add_argument("--backend", type=int, required=True)
    s.add_argument("--kind", required=True, choices=("sluice", "nginx", "haproxy"))
    s.add_argument("--stats", type=int, required=True)
    w = sub.add_parser("wait-drained")
    w.add_argument("--samples", required=True)
    w.add_argument("--timeout", type=float, required=True)
    m = sub.add_parser("summary")
    m.add_argument("--dir", required=True)
    m.add_argument("--system", required=True)
    m.add_argument("--rate", type=float, required=True)
    t = sub.add_parser("table")
    t.add_argument("--dir", required=True)
    t.add_argument("systems", nargs="+")
    a = p.parse_args()
    sys.exit({"sample": cmd_sample, "wait-drained": cmd_wait_drained, "summary": cmd_summary,
              "table": cmd_table}[a.cmd](a) or 0)


if __name__ == "__main__":
    main()
