#!/usr/bin/env bash
# A reload is all or nothing, and a failed one is reported as failed everywhere.
#
# v1: upstream "a" (rate 50, spill route /a) and "c" (route /c that does not spill).
#  1. A broken file (a setting given twice): the log says why, sluice_config_reloads_total{result="failure"}
#     counts it, GET /admin/reload shows result "failure" with the error, and v1 serves.
#  2. v2 changes a's rate to 7, adds upstream "b" with a spill route /b, and makes /c spill;
#     the spool directory of b is taken by a regular file, so b's spool cannot open (root
#     ignores permission bits, a file in the way stops it too). The reload fails as a whole:
#     counted and shown as a failure naming b's spool, a's rate is still 50, /b answers 404,
#     c has no spool (its route still does not spill), and "success" was not counted.
#  3. The file removed, the same v2 again: success. At once, without a restart, requests
#     to /b and /c beyond their budget spill (202) into spools opened by the reload, and the
#     drain replays every one of them to the backend.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$E2E_WORK/sluice.conf
spool=$E2E_WORK/spool

v1() {
  e2e_config_base
  cat <<EOF
upstreams = (
  { name = "a"; address = "127.0.0.1:$REC_PORT"; rate = 50.0; burst = 1; },
  { name = "c"; address = "127.0.0.1:$REC_PORT"; rate = 5.0; burst = 1; }
);
routes = ( { prefix = "/a"; upstream = "a"; spill = true; },
           { prefix = "/c"; upstream = "c"; spill = false; queue_timeout = "5s"; } );
EOF
}
v2() {
  e2e_config_base
  cat <<EOF
upstreams = (
  { name = "a"; address = "127.0.0.1:$REC_PORT"; rate = 7.0; burst = 1; },
  { name = "c"; address = "127.0.0.1:$REC_PORT"; rate = 5.0; burst = 1; },
  { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 5.0; burst = 1; }
);
routes = ( { prefix = "/a"; upstream = "a"; spill = true; },
           { prefix = "/c"; upstream = "c"; spill = true; },
           { prefix = "/b"; upstream = "b"; spill = true; } );
EOF
}
install() { "$@" >"$conf.tmp" && mv "$conf.tmp" "$conf"; }

install v1
e2e_sluice_start "$conf"
sh_require_admin
pid=$(e2e_pid sluice)

hup() {
  local before
  before=$(grep -cE 'reloaded |reload failed' "$E2E_WORK/sluice.err" || true)
  e2e_signal sluice HUP
  done_reloading() { [ "$(grep -cE 'reloaded |reload failed' "$E2E_WORK/sluice.err" || true)" -gt "$before" ]; }
  e2e_wait_until 10 "the reload to end (logged)" done_reloading
}

check() {
  sh_py - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG" "$@" <<'EOF'
import sys, time
from shaping import *
port, aport, rec_log, step = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = Checks()

def reloads(result):
    return metric(aport, "sluice_config_reloads_total", result=result)

def reload_info():
    return admin(aport, "GET", "/admin/reload", expect_status=200).json()

if step == "v1":
    info = reload_info()
    c.check(info.get("last_result") == "none" and info.get("last_error") is None,
            "GET /admin/reload before any reload: result none, no error", info)
    c.check(get(port, "/a/x").status == 200, "GET /a with v1", None)
    c.check(get(port, "/b/x").status == 404, "GET /b with v1 (no route)", None)
elif step == "syntax":
    c.check(reloads("failure") == 1, "a broken file counts as a failed reload", reloads("failure"))
    c.check(reloads("success") == 0, "and not as a success", reloads("success"))
    info = reload_info()
    c.check(info.get("last_result") == "failure", "GET /admin/reload: last result failure", info)
    c.check("sluice.conf:" in (info.get("last_error") or ""),
            "GET /admin/reload: the error names the file and line", info)
    c.check(info.get("last_time"), "GET /admin/reload: the time of the failure", info)
    c.check(get(port, "/a/x").status == 200, "v1 still serves /a", None)
elif step == "blocked":
    c.check(reloads("failure") == 2, "an unopenable spool counts as a failed reload",
            reloads("failure"))
    c.check(reloads("success") == 0, "and not as a success", reloads("success"))
    info = reload_info()
    c.check(info.get("last_result") == "failure", "GET /admin/reload: last result failure", info)
    c.check("spool b" in (info.get("last_error") or ""),
            "GET /admin/reload: the error names the spool that could not open", info)
    c.check(upstream(aport, "a").get("rate") == 50,
            "upstream a keeps its v1 rate (nothing of v2 applied)", upstream(aport, "a"))
    c.check(metric(aport, "sluice_drain_rate_limit", upstream="a") == 50,
            "sluice_drain_rate_limit{upstream=a} is still 50",
            metric(aport, "sluice_drain_rate_limit", upstream="a"))
    names = [u.get("name") for u in admin(aport, "GET", "/admin/upstreams", expect_status=200).json()["upstreams"]]
    c.check("b" not in names, "upstream b is not there", names)
    c.check(get(port, "/b/x").status == 404, "GET /b: 404, v1's routes", None)
    c.check(get(port, "/a/x").status == 200, "GET /a with v1", None)
    # /c does not spill under v1: a burst beyond its budget waits or is refused, never 202.
    res = [post(port, "/c/nospill-%d" % i, timeout=10) for i in range(3)]
    c.check(all(r.status != 202 for r in res), "POST /c is not spilled (v1's route)",
            [r.status for r in res])
elif step == "ok":
    c.check(reloads("success") == 1, "the repaired reload counts as a success", reloads("success"))
    info = reload_info()
    c.check(info.get("last_result") == "success" and info.get("last_error") is None,
            "GET /admin/reload: last result success, no error", info)
    c.check(upstream(aport, "a").get("rate") == 7, "upstream a has its v2 rate", upstream(aport, "a"))
    sent = {}
    for name in ("b", "c"):
        res = [post(port, "/%s/spill-%d" % (name, i), timeout=10) for i in range(8)]
        st = [r.status for r in res]
        c.check(set(st) <= {200, 202} and st.count(202) >= 5,
                "POST /%s right after the reload: spilled (202) beyond the budget" % name, st)
        sent[name] = ["/%s/spill-%d" % (name, i) for i in range(8)]
    def delivered():
        paths = [e["path"] for e in read_log(rec_log)]
        return all(p in paths for ps in sent.values() for p in ps)
    wait_for(delivered, 15, "every request to /b and /c to reach the backend")
    for name in ("b", "c"):
        wait_for(lambda: backlog(aport, name) == 0, 5, "the backlog of %s to be 0" % name)
        c.check(metric(aport, "sluice_drained_total", upstream=name, outcome="delivered") >= 5,
                "replays of %s counted as delivered" % name,
                metric(aport, "sluice_drained_total", upstream=name, outcome="delivered"))
c.done()
EOF
}

check v1

# 1. A broken file: routes given twice.
{
  v1
  echo 'routes = ( { prefix = "/x"; upstream = ; } );'
} >"$conf"
hup
e2e_assert_file_match 'reload failed, keeping the running config: .*sluice\.conf:[0-9]+: ' "$E2E_WORK/sluice.err" \
  "the log gives the reason of the failed reload"
check syntax
e2e_log "ok: a broken file is reported as a failed reload; v1 serves"

# 2. b's spool directory is taken by a regular file.
mkdir -p "$spool"
echo "not a directory" >"$spool/b"
install v2
hup
e2e_assert_file_match 'reload failed, keeping the running config: spool b: ' "$E2E_WORK/sluice.err" \
  "the log names the spool that could not open"
check blocked
e2e_log "ok: a spool that cannot open fails the reload as a whole; v1 serves unchanged"

# 3. The same v2 once the file is gone: spill and drain at once.
rm -f "$spool/b"
hup
check ok
[ -d "$spool/b" ] && [ -d "$spool/c" ] || e2e_fail "the reload did not open the spools of b and c"
e2e_assert_eq "$pid" "$(e2e_pid sluice)" "pid after the reloads"
e2e_log "ok: a reload that adds spilling upstreams spills and drains without a restart"

e2e_sluice_stop
