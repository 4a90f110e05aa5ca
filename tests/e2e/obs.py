#!/usr/bin/env python3
"""Checks for sluice's observability files: the metrics exposition, docs/metrics.md,
grafana/sluice-dashboard.json and grafana/alerts.yml (tests/e2e/test_metrics_*.sh,
test_alert_rules.sh, test_dashboard_exprs.sh, test_prometheus_integration.sh).

Usage: python3 obs.py COMMAND ARGS...  (each command exits 0 when its checks pass, 1 with
"obs: FAIL: ..." lines on stderr otherwise)

  exposition SCRAPE             parse a /metrics body (Prometheus text 0.0.4): no series twice,
                                one HELP and TYPE per family, a family's samples together
  docs DOCS [SCRAPE]            docs/metrics.md is well formed; with SCRAPE, it documents every
                                family of the scrape (type and label names) and nothing else
  uses DOCS DASHBOARD ALERTS    the "Used by" lines of docs/metrics.md match what the dashboard
                                panels and the alert rules really use, and every metric they use
                                is documented
  lint-dashboard DASHBOARD DOCS the dashboard is importable: variables, data source, unique ids,
                                grid, and every selector filtered by $job, $instance, $upstream
  dashboard-rules DASHBOARD OUT writes every dashboard expression (panels, annotations, variable
                                selectors) into OUT as recording rules, for "promtool check rules"
  alert-tests ALERTS TESTS      every alert has annotations summary, description and runbook, a
                                severity label, and a unit test where it fires and one where not
  render-alerts ALERTS OUT FOR  copies ALERTS to OUT with every non-zero "for" set to FOR
  exprs DASHBOARD ALERTS NAME=VALUE...
                                prints a JSON list of every dashboard and alert expression with
                                the dashboard variables substituted ($__rate_interval etc. too)

The module is also imported by the shell tests' python3 blocks ("from obs import *").
"""
import json
import re
import sys

import yaml

# Families that Prometheus makes itself, not sluice: documented, used, never scraped.
SYNTHETIC = {"up"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

_failures = []


def fail(msg):
    _failures.append(msg)
    print("obs: FAIL: " + msg, file=sys.stderr)


def log(msg):
    print("obs: " + msg, file=sys.stderr)


def finish():
    if _failures:
        print("obs: %d check(s) failed" % len(_failures), file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


# ------------------------------------------------------------------ exposition

_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')


def parse_labels(text):
    """Parses the inside of {...}; returns a list of (name, value) or raises ValueError."""
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise ValueError("bad label set at %r" % text[pos:])
        out.append((m.group(1), m.group(2)))
        pos = m.end()
    return out


def parse_exposition(body):
    """Parses a text-format 0.0.4 body. Returns (families, errors): families maps a family
    name to {"type", "help", "samples": [(name, labels dict, value)]}; errors lists what is
    malformed, duplicated or out of place."""
    fams = {}
    errors = []
    seen_series = {}
    order = []  # family of each sample, in order, to check that families are contiguous
    current = None
    for n, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                fam = fams.setdefault(name, {"type": None, "help": None, "samples": []})
                key = parts[1].lower()
                if fam[key] is not None:
                    errors.append("line %d: a second # %s for %s" % (n, parts[1], name))
                fam[key] = parts[3] if len(parts) > 3 else ""
                if key == "type" and fam["type"] not in TYPES:
                    errors.append("line %d: unknown type %r for %s" % (n, fam["type"], name))
                if fam["samples"]:
                    errors.append("line %d: # %s for %s after its samples" % (n, parts[1], name))
                current = name
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            errors.append("line %d: not a sample line: %r" % (n, line))
            continue
        sname, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        try:
            labels = parse_labels(labels_text)
        except ValueError as e:
            errors.append("line %d: %s" % (n, e))
            continue
        names = [k for k, _ in labels]
        if len(set(names)) != len(names):
            errors.append("line %d: a label repeated in %r" % (n, line))
        try:
            float(value)
        except ValueError:
            errors.append("line %d: bad value %r" % (n, value))
        family = family_of(sname, fams)
        if family is None:
            errors.append("line %d: sample %s has no # TYPE before it" % (n, sname))
            family = sname
            fams.setdefault(family, {"type": None, "help": None, "samples": []})
        elif current is not None and family != current:
            errors.append("line %d: sample %s outside its family's block (after %s)" % (n, sname, current))
        key = (sname, tuple(sorted(labels)))
        if key in seen_series:
            errors.append("line %d: series %s%s appears twice (first on line %d)"
                          % (n, sname, "{" + labels_text + "}", seen_series[key]))
        else:
            seen_series[key] = n
        fams[family]["samples"].append((sname, dict(labels), float(value)))
        if not order or order[-1] != family:
            if family in order:
                errors.append("line %d: samples of %s are split in two blocks" % (n, family))
            order.append(family)
    for name, fam in fams.items():
        if fam["type"] is None:
            errors.append("family %s has no # TYPE" % name)
        if fam["help"] is None:
            errors.append("family %s has no # HELP" % name)
        if fam["type"] == "histogram":
            check_histogram(name, fam, errors)
    return fams, errors


def family_of(sample_name, fams):
    if sample_name in fams and fams[sample_name]["type"] not in ("histogram", "summary"):
        return sample_name
    for suf in HIST_SUFFIXES:
        if sample_name.endswith(suf):
            base = sample_name[: -len(suf)]
            if base in fams and fams[base]["type"] in ("histogram", "summary"):
                return base
    return sample_name if sample_name in fams else None


def check_histogram(name, fam, errors):
    """Each series of a histogram: buckets with increasing le ending at +Inf, cumulative
    counts, and a _count equal to the +Inf bucket."""
    series = {}
    for sname, labels, value in fam["samples"]:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(rest, {"buckets": [], "count": None, "sum": None})
        if sname == name + "_bucket":
            if "le" not in labels:
                errors.append("%s: a bucket without le %s" % (name, dict(rest)))
                continue
            s["buckets"].append((float(labels["le"]), value))
        elif sname == name + "_count":
            s["count"] = value
        elif sname == name + "_sum":
            s["sum"] = value
        else:
            errors.append("%s: unexpected sample %s" % (name, sname))
    for rest, s in series.items():
        where = "%s%s" % (name, dict(rest))
        les = [le for le, _ in s["buckets"]]
        if not les or les[-1] != float("inf"):
            errors.append("%s: the last bucket is not le=\"+Inf\"" % where)
        if les != sorted(les) or len(set(les)) != len(les):
            errors.append("%s: bucket bounds not strictly increasing: %s" % (where, les))
        counts = [c for _, c in s["buckets"]]
        if counts != sorted(counts):
            errors.append("%s: bucket counts not cumulative: %s" % (where, counts))
        if s["count"] is None or s["sum"] is None:
            errors.append("%s: missing _count or _sum" % where)
        elif counts and s["count"] != counts[-1]:
            errors.append("%s: _count %g differs from the +Inf bucket %g" % (where, s["count"], counts[-1]))


def label_names(fam):
    """The label names of a family's series (for histograms without le)."""
    names = set()
    for _, labels, _ in fam["samples"]:
        names.update(k for k in labels if k != "le")
    return names


# ------------------------------------------------------------------ docs/metrics.md

def parse_docs(path):
    """docs/metrics.md: one "### name" section per family with the lines
    "- Type: ...", "- Labels: a, b" (or "none"), "- Meaning: ..." and "- Used by: ...".
    Returns {name: {"type", "labels": set, "meaning", "panels": set, "alerts": set}}."""
    docs = {}
    cur = None
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.rstrip("\n")
        m = re.match(r"^### `?([a-zA-Z_:][a-zA-Z0-9_:]*)`?\s*$", line)
        if m:
            cur = m.group(1)
            if cur in docs:
                fail("%s:%d: %s documented twice" % (path, n, cur))
            docs[cur] = {"line": n, "type": None, "labels": None, "meaning": None,
                         "panels": set(), "alerts": set(), "used": None}
            continue
        if line.startswith("#"):
            cur = None
            continue
        m = re.match(r"^- (Type|Labels|Meaning|Used by): (.*)$", line)
        if cur is None or not m:
            continue
        key, val = m.group(1), m.group(2).strip()
        d = docs[cur]
        if key == "Type":
            d["type"] = val.strip("`")
        elif key == "Labels":
            d["labels"] = set() if val in ("none", "-") else {
                x.strip().strip("`") for x in val.split(",") if x.strip()}
        elif key == "Meaning":
            d["meaning"] = val
        else:
            d["used"] = val
            d["panels"] = set(re.findall(r'"([^"]+)"', val))
            d["alerts"] = set(re.findall(r"\b(Sluice[A-Za-z]+)\b", val))
    for name, d in docs.items():
        for key in ("type", "labels", "meaning", "used"):
            if d[key] is None:
                fail("%s:%d: %s has no '- %s:' line" % (path, d["line"], name,
                                                          "Used by" if key == "used" else key.capitalize()))
        if d["type"] is not None and d["type"] not in TYPES:
            fail("%s:%d: %s has an unknown type %r" % (path, d["line"], name, d["type"]))
    return docs


def check_docs_against_scrape(docs, fams):
    for name, fam in sorted(fams.items()):
        d = docs.get(name)
        if d is None:
            fail("docs/metrics.md does not document %s (%s, labels %s)"
                 % (name, fam["type"], sorted(label_names(fam))))
            continue
        if d["type"] != fam["type"]:
            fail("%s: documented as %s, exposed as %s" % (name, d["type"], fam["type"]))
        if d["labels"] is not None and d["labels"] != label_names(fam):
            fail("%s: documented labels %s, exposed labels %s"
                 % (name, sorted(d["labels"]), sorted(label_names(fam))))
    for name in sorted(set(docs) - set(fams) - SYNTHETIC):
        fail("docs/metrics.md documents %s, which the scrape does not have" % name)


# ------------------------------------------------------------------ expressions

_METRIC_RE = re.compile(r"\b((?:sluice|process)_[a-zA-Z0-9_]+|up)\b(?!\s*\()")
_VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def strip_strings(expr):
    """expr with the contents of "..." blanked, so that label values are not read as names."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', expr)


def metrics_in(expr):
    """The metric names an expression selects (histogram suffixes kept)."""
    plain = strip_strings(expr)
    out = []
    for m in _METRIC_RE.finditer(plain):
        # Skip label names inside {...} and by/on/without/ignoring (...) lists.
        before = plain[: m.start()]
        if before.count("{") > before.count("}"):
            continue
        if re.search(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*$", before):
            continue
        out.append(m.group(1))
    return out


def selectors_in(expr):
    """The vector selectors of an expression: [(metric, "{...}" or "")]."""
    plain = strip_strings(expr)
    out = []
    for m in _METRIC_RE.finditer(plain):
        before = plain[: m.start()]
        if before.count("{") > before.count("}"):
            continue
        if re.search(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*$", before):
            continue
        rest = expr[m.end():]
        sm = re.match(r"\s*(\{(?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*\})", rest)
        out.append((m.group(1), sm.group(1) if sm else ""))
    return out


def family_name(metric, docs):
    if metric in docs:
        return metric
    for suf in HIST_SUFFIXES:
        if metric.endswith(suf) and metric[: -len(suf)] in docs:
            return metric[: -len(suf)]
    return None


def load_dashboard(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dashboard_panels(dash):
    """Every panel (rows' nested panels too), rows excluded."""
    out = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def dashboard_exprs(dash):
    """[(where, title, expr)] for every panel target, annotation and variable selector."""
    out = []
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(("panel %s %s" % (p.get("id"), t.get("refId")), p.get("title"), t["expr"]))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(("annotation", a.get("name"), a["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", q or "")
        if m:
            out.append(("variable", v.get("name"), "count by (%s) (%s)" % (m.group(2), m.group(1))))
        elif q:
            out.append(("variable", v.get("name"), q))
    return out


def load_alerts(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def substitute(expr, values):
    """Replaces Grafana variables ($x, ${x}, ${x:fmt}, [[x]]) with values[x]; raises
    KeyError naming an unknown variable."""
    def rep(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(name)
        return values[name]
    return _VAR_RE.sub(rep, expr)


def default_values(extra=None):
    v = {"job": "sluice", "instance": ".*", "upstream": ".*", "__rate_interval": "5m",
         "__interval": "1m", "__range": "1h", "__range_s": "3600", "__interval_ms": "60000"}
    v.update(extra or {})
    return v


# ------------------------------------------------------------------ HTTP, load, Prometheus

def http_get(url, timeout=10):
    """GET url; returns (status, headers dict with lower-case names, body str)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode("utf-8", "replace")


def scrape(admin_port):
    """The body of sluice's /metrics; fails the check unless it answers 200."""
    st, hdrs, body = http_get("http://127.0.0.1:%d/metrics" % int(admin_port))
    if st != 200:
        fail("GET /metrics answered %s" % st)
    return hdrs, body


class Load:
    """Sends requests at a fixed rate from a few keep-alive connections (an open model as long
    as the connections keep up). requests is a list of (method, path, headers, body); each
    is sent at start + i / rate. results holds (i, status) once run() returns."""

    def __init__(self, port, requests, rate, conns=16, timeout=15):
        self.port, self.requests, self.rate = int(port), requests, float(rate)
        self.conns, self.timeout = conns, timeout
        self.results = []

    def run(self):
        import http.client
        import queue
        import threading
        import time
        work = queue.Queue()
        t0 = time.time() + 0.05
        for i in range(len(self.requests)):
            work.put(i)
        lock = threading.Lock()

        def worker():
            conn = None
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    break
                delay = t0 + i / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                method, path, headers, body = self.requests[i]
                status = 0
                for _ in range(2):  # once more on a connection the server closed
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                        conn.request(method, path, body=body, headers=headers)
                        r = conn.getresponse()
                        r.read()
                        status = r.status
                        if r.getheader("connection", "").lower() == "close":
                            conn.close()
                            conn = None
                        break
                    except (OSError, http.client.HTTPException):
                        if conn is not None:
                            conn.close()
                        conn = None
                with lock:
                    self.results.append((i, status))
            if conn is not None:
                conn.close()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.timeout + len(self.requests) / self.rate + 5)
        return self

    def statuses(self):
        out = {}
        for _, s in self.results:
            out[s] = out.get(s, 0) + 1
        return out


def prom_query(port, expr, timeout=10):
    """Runs an instant query through Prometheus' HTTP API. Returns (ok, result list or error)."""
    import urllib.parse
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (int(port), urllib.parse.urlencode({"query": expr}))
    st, _, body = http_get(url, timeout)
    try:
        j = json.loads(body)
    except ValueError:
        return False, "HTTP %s: %s" % (st, body[:200])
    if st != 200 or j.get("status") != "success":
        return False, "HTTP %s: %s: %s" % (st, j.get("errorType"), j.get("error"))
    res = j["data"]["result"]
    if j["data"]["resultType"] == "scalar":
        res = [{"metric": {}, "value": res}]
    return True, res


def prom_value(port, expr):
    """The first value of an instant query as a float, or None when it returns nothing."""
    ok, res = prom_query(port, expr)
    if not ok or not res:
        return None
    return float(res[0]["value"][1])


def firing(port, alertname):
    ok, res = prom_query(port, 'ALERTS{alertname="%s", alertstate="firing"}' % alertname)
    return ok and len(res) > 0


# ------------------------------------------------------------------ commands

def cmd_exposition(path):
    body = open(path, encoding="utf-8").read()
    fams, errors = parse_exposition(body)
    for e in errors:
        fail(e)
    n = sum(len(f["samples"]) for f in fams.values())
    log("%d families, %d samples, %d problems" % (len(fams), n, len(errors)))


def cmd_docs(docs_path, scrape=None):
    docs = parse_docs(docs_path)
    log("%d families documented" % len(docs))
    if scrape:
        fams, errors = parse_exposition(open(scrape, encoding="utf-8").read())
        for e in errors:
            fail(e)
        check_docs_against_scrape(docs, fams)


def cmd_uses(docs_path, dash_path, alerts_path):
    docs = parse_docs(docs_path)
    dash = load_dashboard(dash_path)
    alerts = load_alerts(alerts_path)
    # What really uses what.
    panel_uses = {}  # family -> panel titles
    titles = set()
    for p in dashboard_panels(dash):
        titles.add(p.get("title"))
        for t in p.get("targets", []):
            for m in metrics_in(t.get("expr", "")):
                fam = family_name(m, docs)
                if fam is None:
                    fail('panel "%s" uses %s, which docs/metrics.md does not document' % (p.get("title"), m))
                    continue
                panel_uses.setdefault(fam, set()).add(p.get("title"))
    alert_uses = {}
    names = set()
    for r in alerts:
        names.add(r["alert"])
        for m in metrics_in(r["expr"]):
            fam = family_name(m, docs)
            if fam is None:
                fail("alert %s uses %s, which docs/metrics.md does not document" % (r["alert"], m))
                continue
            alert_uses.setdefault(fam, set()).add(r["alert"])
    for fam, d in sorted(docs.items()):
        real_p, real_a = panel_uses.get(fam, set()), alert_uses.get(fam, set())
        for t in sorted(d["panels"] - titles):
            fail('%s: "Used by" names panel "%s", which the dashboard does not have' % (fam, t))
        for t in sorted((d["panels"] & titles) - real_p):
            fail('%s: "Used by" names panel "%s", which does not use it' % (fam, t))
        for t in sorted(real_p - d["panels"]):
            fail('%s: panel "%s" uses it; add it to its "Used by" line' % (fam, t))
        for a in sorted(d["alerts"] - names):
            fail("%s: \"Used by\" names alert %s, which alerts.yml does not have" % (fam, a))
        for a in sorted((d["alerts"] & names) - real_a):
            fail("%s: \"Used by\" names alert %s, which does not use it" % (fam, a))
        for a in sorted(real_a - d["alerts"]):
            fail("%s: alert %s uses it; add it to its \"Used by\" line" % (fam, a))
        if not real_p and not real_a:
            fail("%s: documented, but no panel or alert uses it" % fam)
    log("%d panels, %d alerts, %d families cross-checked" % (len(titles), len(names), len(docs)))


def cmd_lint_dashboard(dash_path, docs_path):
    dash = load_dashboard(dash_path)
    docs = parse_docs(docs_path)
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            fail("dashboard: no %r" % key)
    if dash.get("id") is not None:
        fail("dashboard: id must be null in an importable dashboard")
    if "__inputs" in dash:
        fail("dashboard: __inputs would make provisioning fail; use the datasource variable")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail("dashboard: no 'datasource' variable of type datasource for prometheus")
    for name in ("job", "instance", "upstream"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            fail("dashboard: no query variable %r" % name)
    up = variables.get("upstream", {})
    if not (up.get("multi") and up.get("includeAll") and up.get("allValue") == ".*"):
        fail("dashboard: the upstream variable must be multi-value with All = .*")
    ids = set()
    boxes = []
    want_ds = {"type": "prometheus", "uid": "${datasource}"}
    all_panels = []
    for p in dash.get("panels", []):
        all_panels.append(p)
        all_panels.extend(p.get("panels", []))
    for p in all_panels:
        pid = p.get("id")
        if pid in ids:
            fail("panel id %s used twice" % pid)
        ids.add(pid)
        g = p.get("gridPos")
        if not g or any(k not in g for k in ("h", "w", "x", "y")):
            fail('panel "%s": no complete gridPos' % p.get("title"))
            continue
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            fail('panel "%s": gridPos outside the 24 columns' % p.get("title"))
        for other_title, o in boxes:
            if (g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and
                    g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]):
                fail('panel "%s" overlaps panel "%s"' % (p.get("title"), other_title))
        boxes.append((p.get("title"), g))
        if p.get("type") == "row":
            continue
        if not p.get("title") or not p.get("description"):
            fail("panel %s: needs a title and a description" % pid)
        if p.get("datasource") != want_ds:
            fail('panel "%s": data source must be %s' % (p.get("title"), want_ds))
        if not p.get("targets"):
            fail('panel "%s": no query' % p.get("title"))
        for t in p.get("targets", []):
            if t.get("datasource") not in (None, want_ds):
                fail('panel "%s" %s: data source must be %s' % (p.get("title"), t.get("refId"), want_ds))
            if not t.get("expr"):
                fail('panel "%s" %s: empty expression' % (p.get("title"), t.get("refId")))
    titles = [p.get("title") for p in dashboard_panels(dash)]
    for t in set(titles):
        if titles.count(t) > 1:
            fail('two panels are titled "%s"' % t)
    # Every selector is filtered by the dashboard's variables.
    for where, title, expr in dashboard_exprs(dash):
        if where == "variable":
            continue
        for metric, sel in selectors_in(expr):
            fam = family_name(metric, docs)
            if fam is None:
                fail('%s "%s": %s is not documented in docs/metrics.md' % (where, title, metric))
                continue
            need = ['job=~"$job"', 'instance=~"$instance"']
            if "upstream" in (docs[fam]["labels"] or set()):
                need.append('upstream=~"$upstream"')
            for n in need:
                if n not in sel:
                    fail('%s "%s": selector %s%s lacks %s' % (where, title, metric, sel, n))
    for where, title, expr in dashboard_exprs(dash):
        try:
            substitute(expr, default_values())
        except KeyError as e:
            fail('%s "%s": unknown variable $%s' % (where, title, e.args[0]))
    log("%d panels, %d expressions" % (len(ids), len(dashboard_exprs(dash))))


def cmd_dashboard_rules(dash_path, out_path):
    dash = load_dashboard(dash_path)
    rules = []
    for i, (where, title, expr) in enumerate(dashboard_exprs(dash)):
        try:
            e = substitute(expr, default_values())
        except KeyError as err:
            fail('%s "%s": unknown variable $%s' % (where, title, err.args[0]))
            continue
        rules.append({"record": "sluice_dashboard_expr_%d" % (i + 1), "expr": e,
                      "labels": {"dashboard_source": "%s: %s" % (where, title)}})
    with open(out_path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "sluice-dashboard", "rules": rules}]}, f,
                       sort_keys=False, width=1000)
    log("%d expressions written to %s" % (len(rules), out_path))


def cmd_alert_tests(alerts_path, tests_path):
    alerts = load_alerts(alerts_path)
    with open(tests_path, encoding="utf-8") as f:
        tests = yaml.safe_load(f)
    fires, quiet = set(), set()
    for t in tests.get("tests", []):
        for c in t.get("alert_rule_test", []):
            (fires if c.get("exp_alerts") else quiet).add(c.get("alertname"))
    names = set()
    for r in alerts:
        a = r["alert"]
        names.add(a)
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            if not ann.get(key, "").strip():
                fail("alert %s: no %s annotation" % (a, key))
        if r.get("labels", {}).get("severity") not in ("warning", "critical"):
            fail("alert %s: severity label must be warning or critical" % a)
        if "for" not in r:
            fail("alert %s: no 'for' (write 'for: 0m' to fire at once)" % a)
        if a not in fires:
            fail("alert %s: no unit test where it fires" % a)
        if a not in quiet:
            fail("alert %s: no unit test where it does not fire" % a)
    for a in sorted((fires | quiet) - names):
        fail("%s tests alert %s, which %s does not have" % (tests_path, a, alerts_path))
    log("%d alerts, each with a firing and a quiet case" % len(names))


def cmd_render_alerts(alerts_path, out_path, for_value):
    with open(alerts_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for g in doc["groups"]:
        for r in g["rules"]:
            if "alert" in r and str(r.get("for", "0m")) not in ("0", "0s", "0m"):
                r["for"] = for_value
    with open(out_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False, width=1000)


def cmd_exprs(dash_path, alerts_path, *assignments):
    values = default_values(dict(a.split("=", 1) for a in assignments))
    out = []
    for where, title, expr in dashboard_exprs(load_dashboard(dash_path)):
        out.append({"kind": "dashboard", "where": where, "title": title,
                    "expr": substitute(expr, values)})
    for r in load_alerts(alerts_path):
        out.append({"kind": "alert", "where": "alert", "title": r["alert"], "expr": r["expr"].strip()})
    json.dump(out, sys.stdout, indent=1)
    print()


COMMANDS = {
    "exposition": (cmd_exposition, 1, 1),
    "docs": (cmd_docs, 1, 2),
    "uses": (cmd_uses, 3, 3),
    "lint-dashboard": (cmd_lint_dashboard, 2, 2),
    "dashboard-rules": (cmd_dashboard_rules, 2, 2),
    "alert-tests": (cmd_alert_tests, 2, 2),
    "render-alerts": (cmd_render_alerts, 3, 3),
    "exprs": (cmd_exprs, 2, 99),
}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    fn, lo, hi = COMMANDS[argv[1]]
    args = argv[2:]
    if not lo <= len(args) <= hi:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    fn(*args)
    finish()


if __name__ == "__main__":
    main(sys.argv)
