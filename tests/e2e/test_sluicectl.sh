#!/usr/bin/env bash
# sluicectl against a running sluice and a real backend on loopback, as an operator uses it:
#   - the error lines and exit statuses: admin listener unreachable (3), no token or a wrong
#     one (4), an unknown upstream (5), bad arguments (2), a config file that does not load (6);
#   - status and status --json during a burst that spills; on a terminal (a pty) the drain's
#     progress bar, and --watch redrawing every second until Ctrl-C, which exits 0;
#   - pause, rate and resume: reflected in GET /admin/upstreams, and the drain stops while
#     paused (the backend receives nothing) and goes on once resumed;
#   - reload of a good file (the new config applies) and of a broken one (exit 1, the
#     file:line of the error, the running config stays);
#   - dead list with each filter, dead show, a bulk redrive (delivered this time) and a bulk
#     purge by filter with the progress line on a terminal and a summary;
#   - request and cancel of a spilled request through its status URL.
#
# sluice: one upstream "b" in front of the recording backend, rate 20/s, burst 1, spill on,
# retry.max_attempts 1 (a 5xx makes a dead letter at once), admin.token "s3cret". sluicectl
# reads the addresses and the token from a copy of the config with the real ports.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

CTL=$(dirname "$SLUICE")/sluicectl
[ -x "$CTL" ] || e2e_fail "no sluicectl next to $SLUICE"

sh_backend_start
config() { # config LISTEN ADMIN
  cat <<EOF
listen = "$1";
admin = { listen = "$2"; token = "s3cret"; };
log = { level = "info"; access = false; };
spool = { dir = "$E2E_WORK/spool"; fsync = "off"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 20.0; burst = 1;
                retry = { max_attempts = 1; }; } );
routes = ( { prefix = "/"; upstream = "b"; spill = true; } );
EOF
}
config 127.0.0.1:0 127.0.0.1:0 >"$E2E_WORK/sluice.conf"
e2e_sluice_start "$E2E_WORK/sluice.conf"
sh_require_admin
config "127.0.0.1:$SLUICE_PORT" "127.0.0.1:$SLUICE_ADMIN_PORT" >"$E2E_WORK/ctl.conf"

python3 - "$CTL" "$E2E_WORK" "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_PORT" "$REC_LOG" <<'EOF'
import os, pty, re, select, signal, socket, subprocess, sys, threading, time
from shaping import *

ctl_bin, work = sys.argv[1], sys.argv[2]
port, aport, rport, rec_log = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
conf = os.path.join(work, "ctl.conf")
tok = "s3cret"
c = Checks()
env = dict(os.environ)
env.pop("SLUICE_ADMIN_TOKEN", None)


def ctl(*args, config=True, extra_env=None, timeout=30):
    """Runs sluicectl; returns (exit status, stdout, stderr). Its stderr is kept in ctl.err
    (where the sanitizer reports of an ASan build would be)."""
    argv = [ctl_bin] + (["-c", conf] if config else []) + list(args)
    e = dict(env, **(extra_env or {}))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e)
    with open(os.path.join(work, "ctl.err"), "a") as f:
        f.write("$ %s\n%s" % (" ".join(argv), p.stderr))
    return p.returncode, p.stdout, p.stderr


def ctl_tty(*args, interrupt_after=None, timeout=20):
    """Runs sluicectl with stdout and stderr on a terminal (a pty); with <interrupt_after>
    seconds, sends it SIGINT (Ctrl-C) then. Returns (exit status, what it wrote)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([ctl_bin, "-c", conf] + list(args), stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out, t0, sent = b"", time.time(), False
    while True:
        if interrupt_after is not None and not sent and time.time() - t0 >= interrupt_after:
            p.send_signal(signal.SIGINT)
            sent = True
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                break
            out += data
        elif p.poll() is not None:
            break
        if time.time() - t0 > timeout:
            p.kill()
            break
    rc = p.wait(timeout=5)
    os.close(master)
    text = out.decode("utf-8", "replace")
    with open(os.path.join(work, "ctl.err"), "a") as f:
        f.write("$ (tty) %s\n%s" % (" ".join(args), text))
    return rc, text


def one_line(err):
    return len(err.strip().splitlines()) == 1


def adm(path):
    return admin(aport, "GET", path, tok, expect_status=200).json()


def recorded():
    return len(read_log(rec_log))


def spill(prefix, n):
    """Spills <n> POSTs <prefix>/0.. and returns their ids. A request finds the budget's one
    token unused when nothing is queued and is forwarded live, paused or not: a first POST
    takes it (its id joins the list if it spilled all the same)."""
    r = post(port, prefix + "/primer")
    ids = [r.json()["id"]] if r.status == 202 else []
    for i in range(n):
        ids.append(check_accept_body(post(port, "%s/%d" % (prefix, i)), prefix, held=True)["id"])
    return ids


def ages():
    """The ages of the dead letters by id, as the admin API tells them now."""
    d = adm("/admin/upstreams/b/dead")["dead"]
    return {x["id"]: x["age_seconds"] for x in d}


# ---- errors: one line on stderr, a distinct exit status -------------------------------------
s = socket.socket()
s.bind(("127.0.0.1", 0))
closed_port = s.getsockname()[1]
s.close()
rc, out, err = ctl("--admin", "127.0.0.1:%d" % closed_port, "--token", tok, "status", config=False)
c.check(rc == 3 and err.strip() == "sluicectl: cannot connect to the admin listener "
        "127.0.0.1:%d: connection refused" % closed_port and out == "",
        "unreachable admin listener: exit 3 and one line", (rc, out, err))
rc, out, err = ctl("--admin", "127.0.0.1:%d" % aport, "status", config=False)
c.check(rc == 4 and one_line(err) and "answered 401: token missing or wrong (none was given" in err,
        "no token: exit 4, 'token missing or wrong'", (rc, err))
rc, out, err = ctl("status", extra_env={"SLUICE_ADMIN_TOKEN": "wrong"})
c.check(rc == 4 and one_line(err) and "token missing or wrong (the one from $SLUICE_ADMIN_TOKEN)" in err,
        "a wrong token from the environment (over the file's): exit 4", (rc, err))
rc, out, err = ctl("--admin", "127.0.0.1:%d" % aport, "status", config=False,
                   extra_env={"SLUICE_ADMIN_TOKEN": tok})
c.check(rc == 0 and out.startswith("UPSTREAM"), "the token from SLUICE_ADMIN_TOKEN, the address from --admin", (rc, out, err))
for args in (["pause", "nope"], ["status", "nope"], ["rate", "nope", "5"], ["dead", "list", "--upstream", "nope"]):
    rc, out, err = ctl(*args)
    c.check(rc == 5 and err.strip() == "sluicectl: no upstream named nope",
            "%s: exit 5, 'no upstream named nope'" % " ".join(args), (rc, err))
for args, why in ((["frobnicate"], "unknown command 'frobnicate'"),
                  (["rate", "b", "0"], "'0' is not a rate"),
                  (["pause"], "pause: missing argument"),
                  (["dead", "purge"], "only with --all"),
                  (["status", "--timeout", "later"], "'later' is not a duration")):
    rc, out, err = ctl(*args)
    c.check(rc == 2 and err.startswith("sluicectl: ") and why in err and "usage:" in err,
            "%s: exit 2, '%s' and the usage" % (" ".join(args), why), (rc, err))
rc, out, err = ctl("-c", os.path.join(work, "missing.conf"), "status", config=False)
c.check(rc == 6 and one_line(err) and "missing.conf" in err, "a config file that does not load: exit 6", (rc, err))
rc, out, err = ctl("--timeout", "300ms", "--admin", "127.0.0.1:%d" % rport, "--token", "x",
                   "status", config=False)
c.check(rc in (1, 3) and one_line(err), "a server that is not sluice's: one line", (rc, err))

# ---- status during a burst that spills ------------------------------------------------------
r = post(port, "/primer")
res = burst(port, "/orders", 200, 60, conns=16)
spilled = [x for x in res if x["status"] == 202]
c.check(len(spilled) >= 40, "a burst at 10x the rate spills most of it", len(spilled))
rc, out, err = ctl("status", "--json")
j = json.loads(out) if rc == 0 else {}
u = (j.get("upstreams") or [{}])[0]
c.check(rc == 0 and u.get("name") == "b" and u.get("state") == "flowing"
        and u.get("ready", 0) + u.get("inflight", 0) > 10 and isinstance(u.get("eta_seconds"), (int, float)),
        "status --json during the drain: b flowing, a backlog, an ETA", (rc, u, err))
rc, out, err = ctl("status", "b")
lines = out.splitlines()
c.check(rc == 0 and len(lines) == 2 and lines[0].split()[:3] == ["UPSTREAM", "STATE", "RATE"]
        and lines[1].split()[:3] == ["b", "flowing", "20/s"] and "[" not in out,
        "status b: the header and b's row, no bar when stdout is not a terminal", out)
rc, text = ctl_tty("status")
m = re.search(r"\[(#*)(-*)\]\s+(\d+)%\s+(\d+) drained, (\d+) left", text)
c.check(rc == 0 and m is not None and len(m.group(1)) + len(m.group(2)) == 40,
        "status on a terminal: the drain's progress bar", text)
rc, text = ctl_tty("status", "--watch", interrupt_after=2.5)
c.check(rc == 0 and text.count("\x1b[H\x1b[2J") >= 2 and text.count("UPSTREAM") >= 2,
        "status --watch on a terminal: redrawn every second, Ctrl-C exits 0",
        (rc, text.count("\x1b[H\x1b[2J"), text[-400:]))
wait_for(lambda: upstream(aport, "b", tok).get("ready") == 0 and upstream(aport, "b", tok).get("inflight") == 0,
         15, "the burst to drain", state=lambda: upstream(aport, "b", tok))
u = upstream(aport, "b", tok)
c.check(u.get("drained_since_empty", 0) >= len(spilled), "drained_since_empty counts the drained burst", u)

# ---- pause, rate, resume --------------------------------------------------------------------
rc, out, err = ctl("pause", "b")
c.check(rc == 0 and out.strip() == "b: paused (spilling goes on, replay stops)", "pause b", (rc, out, err))
c.check(upstream(aport, "b", tok).get("paused") is True and upstream(aport, "b", tok).get("state") == "paused",
        "GET /admin/upstreams: paused", upstream(aport, "b", tok))
waiting = spill("/paused", 10)
before = recorded()
time.sleep(1.0)
c.check(recorded() == before and upstream(aport, "b", tok).get("ready") == len(waiting),
        "paused: the backend gets nothing, the spilled ones wait",
        (before, recorded(), upstream(aport, "b", tok)))
rc, out, err = ctl("status", "b")
c.check(rc == 0 and out.splitlines()[1].split()[:2] == ["b", "paused"], "status shows b paused", out)
rc, out, err = ctl("rate", "b", "50")
c.check(rc == 0 and "b: rate 50 requests/s" in out and upstream(aport, "b", tok).get("rate") == 50,
        "rate b 50: the rate is 50", (rc, out, err, upstream(aport, "b", tok)))
rc, out, err = ctl("resume", "b")
c.check(rc == 0 and upstream(aport, "b", tok).get("paused") is False, "resume b", (rc, out, err))
wait_for(lambda: recorded() >= before + len(waiting), 5, "the spilled ones to reach the backend after the resume")

# ---- reload ---------------------------------------------------------------------------------
rc, out, err = ctl("reload")
c.check(rc == 0 and out.startswith("reloaded: the new config applies"), "reload of the good file", (rc, out, err))
c.check(upstream(aport, "b", tok).get("rate") == 20, "the reload put the file's rate back (20)",
        upstream(aport, "b", tok))
sconf = os.path.join(work, "sluice.conf")
good = open(sconf).read()
with open(sconf, "w") as f:
    f.write(good.replace("burst = 1;", "burst = ;"))
rc, out, err = ctl("reload")
c.check(rc == 1 and one_line(err) and re.search(r"reload refused, the running config stays: .*sluice\.conf:5: ", err),
        "reload of a broken file: exit 1 and its file:line", (rc, err))
rc, out, err = ctl("reload", "--json")
c.check(rc == 1 and json.loads(out).get("last_result") == "failure", "reload --json: the server's document", (rc, out))
with open(sconf, "w") as f:
    f.write(good)
c.check(adm("/admin/reload").get("failures") == 2 and upstream(aport, "b", tok).get("rate") == 20,
        "the running config stayed", adm("/admin/reload"))

# ---- dead letters ---------------------------------------------------------------------------
# Older ones answered 500, then (1.5 s younger) some answered 507; the backend is then fixed.
ctl("pause", "b")
old = spill("/dl/old", 4)
get(rport, "/_ctl/status/500")
ctl("resume", "b")
wait_for(lambda: upstream(aport, "b", tok).get("dead") == len(old), 10, "the old ones dead (500)")
time.sleep(1.5)
ctl("pause", "b")
young = spill("/dl/young", 3)
get(rport, "/_ctl/status/507")
ctl("resume", "b")
wait_for(lambda: upstream(aport, "b", tok).get("dead") == len(old) + len(young), 10,
         "the young ones dead too (507)")
get(rport, "/_ctl/status/200")


def between():
    """An age, in ms, between the youngest old one and the oldest young one (1.5 s apart)."""
    a = ages()
    return "%dms" % ((min(a[i] for i in old) + max(a[i] for i in young)) / 2 * 1000)



def listed(*filters):
    rc, out, err = ctl("dead", "list", "--json", *filters)
    if rc != 0:
        return rc, None
    return rc, sorted(x["id"] for x in json.loads(out)["dead"])


rc, out, err = ctl("dead", "list")
rows = out.splitlines()
c.check(rc == 0 and len(rows) == 1 + len(old) + len(young)
        and rows[0].split()[:3] == ["UPSTREAM", "ID", "STATUS"]
        and sum(" 500 " in r for r in rows) == len(old) and sum(" 507 " in r for r in rows) == len(young),
        "dead list: the header and a row for each", out)
for filters, want, what in (((), old + young, "all"),
                            (("--upstream", "b"), old + young, "--upstream b"),
                            (("--status", "507"), young, "--status 507"),
                            (("--status", "5xx"), old + young, "--status 5xx"),
                            (("--status", "4xx"), [], "--status 4xx"),
                            (("--older-than", between), old, "--older-than"),
                            (("--newer-than", between), young, "--newer-than"),
                            (("--reason", "http 500"), old, "--reason 'http 500'"),
                            (("--id", young[1]), [young[1]], "--id"),
                            (("--status", "500", "--newer-than", between), [], "two filters")):
    rc, ids = listed(*[f() if callable(f) else f for f in filters])
    c.check(rc == 0 and ids == sorted(want), "dead list %s: %d" % (what, len(want)), (rc, ids))
shown = young[-1]  # /dl/young/2
rc, out, err = ctl("dead", "show", shown)
c.check(rc == 0 and "request:      POST /dl/young/2" in out and "last status:  507" in out
        and re.search(r"(?m)^  Via: 1\.1 sluice$", out) is not None and "attempts:     1" in out,
        "dead show: method, target, status, attempts, headers", out)
rc, out, err = ctl("dead", "show", "0" * 32)
c.check(rc == 5 and err.strip() == "sluicectl: no dead letter with id " + "0" * 32, "dead show of no dead letter: exit 5", (rc, err))

rc, out, err = ctl("dead", "redrive", "--status", "507")
c.check(rc == 0 and out.strip() == "redriven %d of %d dead letters" % (len(young), len(young)),
        "dead redrive --status 507", (rc, out, err))
wait_for(lambda: all(get(port, "/_sluice/requests/" + i).json().get("status") == "delivered" for i in young),
         10, "the redriven ones to be delivered (the backend answers 200 now)")
c.check(upstream(aport, "b", tok).get("dead") == len(old), "the old ones are left", upstream(aport, "b", tok))
rc, text = ctl_tty("dead", "purge", "--older-than", "1s", "--upstream", "b")
n = len(old)
c.check(rc == 0 and "purged %d/%d" % (n, n) in text and "purged %d of %d dead letters" % (n, n) in text,
        "dead purge on a terminal: a progress line and a summary", text)
wait_for(lambda: upstream(aport, "b", tok).get("dead") == 0, 5, "no dead letter left")
c.check(all(get(port, "/_sluice/requests/" + i).json().get("status") == "purged" for i in old),
        "the purged ones read 'purged'", None)
rc, out, err = ctl("dead", "redrive", "--all")
c.check(rc == 0 and out.strip() == "no dead letter matches: nothing redriven", "redrive with nothing to do", (rc, out))

# ---- request and cancel ---------------------------------------------------------------------
ctl("pause", "b")
rid = spill("/one", 1)[-1]
rc, out, err = ctl("request", rid)
c.check(rc == 0 and "status:       queued" in out and re.search(r"(?m)^position:     \d+$", out)
        and "eta:          - (the drain is held)" in out, "request: queued, its position", (rc, out, err))
rc, out, err = ctl("--token", "wrong", "cancel", rid)
c.check(rc == 4 and "token missing or wrong" in err, "cancel with a wrong token: exit 4", (rc, err))
rc, out, err = ctl("cancel", rid)
c.check(rc == 0 and out.strip() == "cancelled %s: it will not be delivered" % rid, "cancel", (rc, out, err))
rc, out, err = ctl("request", rid, "--json")
c.check(rc == 0 and json.loads(out).get("status") == "cancelled", "request --json: cancelled", (rc, out))
rc, out, err = ctl("request", "f" * 32)
c.check(rc == 5 and err.strip() == "sluicectl: no request with id " + "f" * 32, "request of no request: exit 5", (rc, err))
ctl("resume", "b")
wait_for(lambda: get(port, "/_sluice/requests/" + young[0]).json().get("status") == "delivered", 5, "delivered")
rc, out, err = ctl("cancel", young[0])
c.check(rc == 1 and err.strip() == "sluicectl: request %s cannot be cancelled: it is delivered" % young[0],
        "cancel of a delivered request: exit 1", (rc, err))
rc, out, err = ctl("--listen", "127.0.0.1:%d" % closed_port, "request", rid)
c.check(rc == 3 and "cannot connect to the listener 127.0.0.1:%d" % closed_port in err,
        "request with an unreachable --listen: exit 3", (rc, err))
c.done()
EOF
e2e_sluice_stop
