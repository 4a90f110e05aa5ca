"""The web console (GET /ui) in a real browser: test_console.sh starts sluice (admin token set)
in front of the recording backend, then runs

    python3 console_check.py --port P --admin-port A --token T --rec-log FILE --workdir DIR
                             [--screenshot PNG]

which drives a headless Chromium over the DevTools protocol (cdp.py) through what an operator
does: open the page, try to pause without the token, give a wrong token and then the right one,
watch a burst spill and drain, pause and resume the drain from the page, and redrive and purge
dead letters by filter, one by one with the progress bar, and singly. It checks the page
against the admin API and /metrics at every step, and fails on any error the page raised
(an exception, console.error, a failed load, a CSP violation) other than the 401s the test
provokes on purpose.

A screenshot taken while the burst drains is saved in DIR as console-burst.png; with
--screenshot, one of the page a few seconds after the resume (the chart then shows the burst,
the pause and the drain) is also written to PNG (docs/console.png comes from there).
"""

import argparse
import os
import re
import sys
import threading
import time

from cdp import Browser, CdpError
from shaping import *  # noqa: F401,F403 - request helpers, metrics, Checks, wait_for, burst

UPSTREAM = "orders"
CARD = '[data-upstream="%s"]' % UPSTREAM


def field(name):
    return "%s [data-field=\"%s\"]" % (CARD, name)


def action(name):
    return "%s [data-action=\"%s\"]" % (CARD, name)


def text_of(b, selector):
    return b.evaluate("(document.querySelector(%r) || {}).textContent" % selector)


def number_of(b, selector):
    """The integer a figure shows ("1,234" -> 1234), or None while it shows none."""
    t = text_of(b, selector) or ""
    digits = t.replace(",", "").strip()
    return int(digits) if digits.isdigit() else None


def set_value(b, selector, value):
    """Types <value> into a field as a person would: its value, then the input event."""
    b.evaluate("""(() => { const el = document.querySelector(%r);
        el.focus(); el.value = %r; el.dispatchEvent(new Event('input', {bubbles: true}));
        el.blur(); return true; })()""" % (selector, value))


def allowed_401(errors, what):
    """Fails unless every error is Chromium's log line for a 401 (what a refused admin call
    leaves in the console, and nothing else)."""
    bad = [e for e in errors if not (e["kind"] == "log/network" and "401" in e["text"])]
    expect(not bad, "%s: the page raised no error but the 401" % what, bad)


def delivered(aport):
    return metric(aport, "sluice_drained_total", upstream=UPSTREAM, outcome="delivered") or 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--admin-port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--rec-log", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--screenshot")
    a = p.parse_args()
    port, aport, tok = a.port, a.admin_port, a.token
    c = Checks()

    # ---- the files, as served
    page = get(aport, "/ui")
    c.check(page.status == 200, "GET /ui answers 200", page)
    c.check(page.header("Content-Type") == "text/html; charset=utf-8", "the page is HTML",
            page.header("Content-Type"))
    csp = page.header("Content-Security-Policy") or ""
    c.check("script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp,
            "a strict Content-Security-Policy (this origin only, nothing inline)", csp)
    c.check(page.header("Cache-Control") == "no-store", "not kept in a cache",
            page.header("Cache-Control"))
    c.check(page.header("X-Content-Type-Options") == "nosniff", "nosniff", page.headers)
    c.check(b"<script" in page.body and b"<script>" not in page.body,
            "the page has no inline script", None)
    for name, ctype in (("console.js", "text/javascript; charset=utf-8"),
                        ("chart.js", "text/javascript; charset=utf-8"),
                        ("metrics.js", "text/javascript; charset=utf-8"),
                        ("console.css", "text/css; charset=utf-8"), ("icon.svg", "image/svg+xml")):
        r = get(aport, "/ui/" + name)
        c.check(r.status == 200 and r.header("Content-Type") == ctype and len(r.body) > 100,
                "GET /ui/%s answers 200 %s" % (name, ctype), r)
    r = get(aport, "/ui/../metrics")
    c.check(r.status == 404, "no path below /ui/ reaches anything but the console's files", r)
    r = get(aport, "/ui/")
    c.check(r.status == 308 and r.header("Location") == "../ui", "/ui/ sends the browser to /ui", r)
    r = post(aport, "/ui")
    c.check(r.status == 405 and r.header("Allow") == "GET, HEAD", "POST /ui is a 405", r)
    idx = get(aport, "/").json()
    c.check(any(e.get("path") == "/ui" and e.get("token") is False for e in idx["endpoints"]),
            "GET / lists /ui, without the token", idx)

    with Browser(a.workdir, width=1280, height=1000) as b:
        b.navigate("http://127.0.0.1:%d/ui" % aport)
        b.wait_for("document.querySelector(%r) !== null" % CARD, 10, "the upstream's card")
        b.wait_for("/^\\d/.test(document.querySelector(%r).textContent)" % field("backlog"), 10,
                   "the first figures")
        c.check(b.evaluate("document.title") == "sluice console", "the title", None)
        c.check(text_of(b, CARD + " h2") == UPSTREAM, "the card names the upstream",
                text_of(b, CARD + " h2"))
        c.check(text_of(b, field("state")) == "Flowing", "the upstream is flowing",
                text_of(b, field("state")))
        c.check(b.evaluate("!document.querySelector('#token-form').hidden"),
                "the page asks for the token, which this sluice has", None)
        errs = b.take_errors()
        c.check(not errs, "the page loads with no error", errs)

        # ---- without the token, pausing fails and says so
        b.click(action("pause"))
        b.wait_for("!document.querySelector('#notice').hidden && "
                   "/token/.test(document.querySelector('#notice').textContent)", 5,
                   "the page to say that pausing needs the token")
        c.check("401" in text_of(b, "#notice"), "the notice gives the 401",
                text_of(b, "#notice"))
        c.check(upstream(aport, UPSTREAM, tok)["paused"] is False,
                "the pause without the token changed nothing", None)
        allowed_401(b.take_errors(), "pause without the token")

        # ---- a wrong token is refused, the right one taken
        set_value(b, "#token-input", "not-the-token")
        b.click("#token-use")
        b.wait_for("document.querySelector('#token-state').dataset.state === 'bad'", 5,
                   "the wrong token to be refused")
        allowed_401(b.take_errors(), "a wrong token")
        set_value(b, "#token-input", tok)
        b.click("#token-use")
        b.wait_for("document.querySelector('#token-state').dataset.state === 'ok'", 5,
                   "the token to be accepted")
        c.check(b.evaluate("sessionStorage.getItem('sluice.adminToken')") == tok,
                "the token is kept in sessionStorage", None)

        # ---- dead letters: 4 answered 500 and 3 answered 501, tried once each
        for i in range(7):
            code = "500" if i < 4 else "501"
            r = post(port, "/orders/dead-%d" % i, {"X-Test-Status": code, "X-Test-Seq": str(1000 + i),
                                                   "X-Sluice-Delay": "100ms"})
            c.check(r.status == 202, "POST dead-%d is spilled (202)" % i, r)
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["dead"] == 7, 10, "7 dead letters",
                 state=lambda: upstream(aport, UPSTREAM, tok))
        b.click(CARD + " details.dead summary")
        b.wait_for("document.querySelectorAll(%r).length === 7" % (field("dead-rows") + " tr"), 5,
                   "the 7 dead letters in the list")
        b.wait_for("document.querySelector(%r).textContent === '7'" % field("dead"), 3,
                   "the Dead figure to say 7")

        # ---- a burst: 400 requests at 100/s against a rate of 25/s spill
        results = {}
        sender = threading.Thread(target=lambda: results.update(
            r=burst(port, "/orders", 100, 400, conns=16)), daemon=True)
        sender.start()
        b.wait_for("+document.querySelector(%r).textContent.replace(/,/g, '') > 40"
                   % field("backlog"), 10, "a backlog of more than 40 on the page")
        time.sleep(2.5)  # a few samples on the chart
        shown = number_of(b, field("backlog"))
        c.check(shown is not None and shown > 0, "the page shows the backlog during the burst", shown)
        c.check(b.evaluate("document.querySelector(%r).textContent" % field("rate-in")) != "–",
                "the chart's legend shows the arrival rate", None)
        b.screenshot(os.path.join(a.workdir, "console-burst.png"))

        # ---- pause from the page stops the drain
        b.click(action("pause"))
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["paused"] is True, 3,
                 "the admin API to say paused after the click")
        b.wait_for("document.querySelector(%r).textContent === 'Paused'" % field("state"), 3,
                   "the page to show Paused")
        c.check(text_of(b, action("pause")) == "Resume", "the button now offers Resume",
                text_of(b, action("pause")))
        time.sleep(1.0)  # replays already out finish
        d0 = delivered(aport)
        time.sleep(2.0)
        d1 = delivered(aport)
        c.check(d1 == d0, "nothing is delivered while paused", (d0, d1))
        c.check(upstream(aport, UPSTREAM, tok)["ready"] > 0, "the backlog waits", None)

        # ---- resume from the page restarts it
        b.click(action("pause"))
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["paused"] is False, 3,
                 "the admin API to say resumed after the click")
        wait_for(lambda: delivered(aport) > d1, 3, "deliveries after the resume")
        b.wait_for("document.querySelector(%r).textContent === 'Flowing'" % field("state"), 3,
                   "the page to show Flowing again")
        if a.screenshot:
            b.click(CARD + ' [data-range="60"]')
            time.sleep(4)
            b.evaluate("window.scrollTo(0, 0)")
            b.screenshot(a.screenshot)
            b.click(CARD + ' [data-range="300"]')

        # ---- a rate set on the page: the rest of the burst drains at once (and the dead
        # letters redriven below need not wait behind it)
        set_value(b, field("rate-input"), "400")
        b.click(CARD + " .rate-form button")
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["rate"] == 400, 3,
                 "the admin API to say rate 400 after the page set it")
        b.wait_for("document.querySelector(%r).textContent === '400/s'" % field("rate"), 3,
                   "the page to show the rate 400/s")
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["ready"] == 0, 10, "the backlog to drain")

        # ---- purge by filter: the 501s, one by one with the progress bar
        set_value(b, field("filter-status"), "501")
        b.wait_for("document.querySelectorAll(%r).length === 3" % (field("dead-rows") + " tr"), 3,
                   "the 3 dead letters answered 501")
        c.check(text_of(b, field("match-text")) == "3 of 7 match", "the filter counts",
                text_of(b, field("match-text")))
        b.click(action("purge-matching"))
        c.check("Click again" in text_of(b, action("purge-matching")),
                "purge asks for a second click", text_of(b, action("purge-matching")))
        b.click(action("purge-matching"))
        b.wait_for("document.querySelector(%r).textContent === '3 / 3'" % field("progress-text"), 3,
                   "the progress to say 3 / 3")
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["dead"] == 4, 5, "4 dead letters left")

        # ---- redrive by filter: the 500s are replayed (and die again: the backend still
        # answers them 500)
        set_value(b, field("filter-status"), "")
        set_value(b, field("filter-reason"), "http 500")
        b.wait_for("document.querySelectorAll(%r).length === 4" % (field("dead-rows") + " tr"), 5,
                   "the 4 dead letters answered 500")
        b.click(action("redrive-matching"))
        wait_for(lambda: all(len(by_seq(read_log(a.rec_log)).get(1000 + i, [])) == 2
                             for i in range(4)), 10,
                 "the backend to get each redriven record a second time",
                 state=lambda: {s: len(v) for s, v in by_seq(read_log(a.rec_log)).items()
                                if s >= 1000})
        # ---- purge one
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["dead"] == 4, 10,
                 "the redriven records to be dead letters again")
        b.wait_for("document.querySelectorAll(%r).length === 4" % (field("dead-rows") + " tr"), 5,
                   "the list to show them again")
        first = b.evaluate("document.querySelector(%r).dataset.id" % (field("dead-rows") + " tr"))
        row = "%s tr[data-id=\"%s\"] [data-action=\"purge-one\"]" % (field("dead-rows"), first)
        b.click(row)
        b.click(row)
        wait_for(lambda: upstream(aport, UPSTREAM, tok)["dead"] == 3, 5, "3 dead letters left")
        dl = admin(aport, "GET", "/admin/upstreams/%s/dead" % UPSTREAM, tok, 200).json()["dead"]
        c.check(first not in [d["id"] for d in dl], "the purged one is gone", dl)

        errs = b.take_errors()
        c.check(not errs, "no error on the page from start to end (the 401s aside)", errs)

    sender.join(30)
    st = sorted(set(r["status"] for r in results.get("r", [])))
    c.check(set(st) <= {200, 202}, "the burst got 200 or 202 only", st)
    c.done()


if __name__ == "__main__":
    try:
        main()
    except CdpError as e:
        fail("browser: %s" % e)
