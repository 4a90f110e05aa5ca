#!/usr/bin/env bash
# Regression test, issue 9 ("request body freed or reused under a pending upstream write"): a
# keep-alive backend that answers before it has read the request body (early_backend.py) must
# still receive every body whole and byte-identical, and no request may carry the bytes of
# another, on the live path and on the replay path, for bodies of 1 KiB to 8 MiB. Before the
# fix sluice pooled the connection and freed or reused the body while its write was pending:
# ASan reported a use after free, and a Release build sent the next request's bytes.
#
# sluice: upstream "live" (no limit, route /live, spill off) and upstream "spilled" (route
# /spill, spill on, paused, rate 0.001/s with a burst of 1: requests spill; resumed at rate 0
# through the admin API, they are replayed), both to the same early-answering backend.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

e2e_spawn early python3 -u "$E2E_DIR/early_backend.py" --log "$E2E_WORK/early.jsonl"
e2e_wait_log early out 'listening on 127\.0\.0\.1:[0-9]+' "$E2E_START_TIMEOUT"
port=$(grep -Eo 'listening on 127\.0\.0\.1:[0-9]+' "$E2E_WORK/early.out" | head -n 1 | sed 's/.*://')

conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
limits = { max_body_bytes = "16MiB"; };
upstreams = (
  { name = "live"; address = "127.0.0.1:$port"; response_timeout = "10s"; },
  { name = "spilled"; address = "127.0.0.1:$port"; response_timeout = "10s";
    rate = 0.001; burst = 1; paused = true; }
);
routes = (
  { prefix = "/live"; upstream = "live"; spill = false; },
  { prefix = "/spill"; upstream = "spilled"; spill = true; }
);
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/early.jsonl" "$(e2e_pid sluice)" <<'EOF'
import hashlib, http.client, os, sys, threading
from shaping import *

port, aport, rec_log, sluice_pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = Checks()
KiB, MiB = 1024, 1024 * 1024
# Sizes in an order that puts small bodies right after large ones on the same connection.
SIZES = [8 * MiB, 1 * KiB, 1 * MiB, 64 * KiB, 8 * MiB, 64 * KiB, 1 * MiB, 1 * KiB]
sent = {}  # X-Test-Id -> sha256 of the body
lock = threading.Lock()


def body_for(tid, size):
    head = ("%s:" % tid).encode()
    return head + os.urandom(size - len(head))


def records():
    out = []
    try:
        with open(rec_log) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def send_all(path, prefix, expect_statuses, answers):
    """Sends SIZES as POSTs on one keep-alive connection, one after the other."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i, size in enumerate(SIZES):
            tid = "%s-%d-%d" % (prefix, i, size)
            body = body_for(tid, size)
            with lock:
                sent[tid] = hashlib.sha256(body).hexdigest()
            conn.request("POST", "%s/%s" % (path, tid), body=body,
                         headers={"X-Test-Id": tid, "Content-Type": "application/octet-stream"})
            r = conn.getresponse()
            data = r.read()
            answers.append((tid, r.status, data[:100]))
            if r.status not in expect_statuses:
                return
    except (OSError, http.client.HTTPException) as e:
        answers.append((prefix, 0, repr(e)))
    finally:
        conn.close()


def sluice_gone():
    try:
        os.kill(sluice_pid, 0)
        return False
    except OSError:
        return True


def recorded(ids):
    """True once every id in <ids> was recorded, or when waiting longer is pointless."""
    es = records()
    return set(ids) <= {e.get("id") for e in es} or any(e.get("bad") for e in es) or sluice_gone()


def check_records(ids, what):
    got = [e for e in records() if e.get("bad") or e.get("id") in ids]
    bad = [e for e in got if e.get("bad")]
    c.check(not bad, "%s: every request the backend read parses (none starts inside another)" % what,
            bad[:3])
    short = [e for e in got if not e.get("bad") and e["got"] != e["length"]]
    c.check(not short, "%s: the backend read every body whole" % what,
            [(e["id"], e["length"], e["got"]) for e in short[:5]])
    wrong = [e["id"] for e in got if not e.get("bad") and e["sha256"] != sent.get(e["id"])]
    c.check(not wrong, "%s: every body the backend read is byte-identical to what the client sent"
            % what, wrong[:5])
    return got


# ---- live path: two clients at once, each on one keep-alive connection
answers = []
threads = [threading.Thread(target=send_all, args=("/live", "live%d" % k, (200,), answers))
           for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join(90)
live_ids = [t for t in sent if t.startswith("live")]
c.check(len(answers) == 2 * len(SIZES) and all(a[1] == 200 and a[2] == b"early" for a in answers),
        "live: every request answered with the backend's early 200", [a for a in answers if a[1] != 200][:4])
wait_for(lambda: recorded(live_ids), 20, "the backend to record every live request",
         state=lambda: len(records()))
got = check_records(set(live_ids), "live")
ids = [e["id"] for e in got if not e.get("bad")]
c.check(sorted(ids) == sorted(live_ids), "live: each request reached the backend exactly once",
        len(ids))

# ---- replay path: spilled (202), then replayed once the upstream is resumed
# A GET (not spillable) takes the one token of the burst, so that every POST after it spills.
r = get(port, "/spill/warmup")
c.check(r.status == 200, "spill: GET /spill/warmup forwarded live with the burst's token", r)
answers = []
send_all("/spill", "spill", (202,), answers)
spill_ids = [t for t in sent if t.startswith("spill")]
spilled = [a[0] for a in answers if a[1] == 202]
c.check(len(answers) == len(SIZES) and sorted(spilled) == sorted(spill_ids),
        "spill: every request spilled (202)", [a for a in answers if a[1] != 202][:4])
admin(aport, "POST", "/admin/upstreams/spilled/rate?value=10000", None, expect_status="2xx")
admin(aport, "POST", "/admin/upstreams/spilled/resume", None, expect_status="2xx")
wait_for(lambda: recorded(spill_ids), 40, "the backend to record every replayed request",
         state=lambda: sorted({e.get("id") for e in records()} & set(spill_ids)))
c.check(not sluice_gone(), "sluice still runs")
got = check_records(set(spill_ids), "replay")
replayed = [e for e in got if not e.get("bad") and e["id"] in spilled]
c.check({e["id"] for e in replayed} == set(spilled), "replay: every spilled request reached the backend",
        sorted(set(spilled) - {e["id"] for e in replayed}))
c.check(all(e["request_id"] for e in replayed), "replay: the spilled ones came through the replayer",
        [e["id"] for e in replayed if not e["request_id"]][:3])
c.done()
EOF
e2e_sluice_stop
e2e_log "ok: early answers on the live and replay paths, bodies intact"
