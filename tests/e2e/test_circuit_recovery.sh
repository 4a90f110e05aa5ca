#!/usr/bin/env bash
# A drain that recovers as soon as the backend does (the upstream's circuit breaker).
#
# sluice: rate = 50/s, burst = 5, connect_timeout 500 ms, and the default retry policy
# (1 s doubling to 5 minutes), under which a drain-wide backoff per failed replay used to
# reach minutes. /orders spills, /live does not. Then:
#   1. the backend is up: /live and /orders are forwarded (200);
#   2. the backend goes away (connection refused): a POST to /orders, whose connect is
#      refused, is spilled and answered 202, not 502 (nothing was sent); so is a POST with a
#      body to /wait (wait mode, upstream w), after being held for its wait_timeout;
#   3. 20 more POSTs are spilled while replays fail; the circuit opens: the admin API shows it
#      open with its failures and the next probe's time and a null ETA, the status URL and
#      the metrics agree, and /live gets 503 with Retry-After at once;
#   4. after 20 s down the backend is back on the same port: every queued request is
#      delivered within 5 s (the /wait one with its body intact), the circuit is closed and
#      the log says when it opened and closed.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
rport=$REC_PORT
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$rport"; rate = 50.0; burst = 5;
                connect_timeout = "500ms"; },
              { name = "w"; address = "127.0.0.1:$rport"; rate = 50.0; burst = 5;
                connect_timeout = "500ms"; } );
routes = ( { prefix = "/orders"; upstream = "b"; spill = true; },
           { prefix = "/live"; upstream = "b"; spill = false; },
           { prefix = "/wait"; upstream = "w"; spill = true; mode = "wait"; wait_timeout = "1s"; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
port, aport = int(sys.argv[1]), int(sys.argv[2])
c = Checks()
c.check(get(port, "/live/a").status == 200, "/live is forwarded while the backend is up")
c.check(post(port, "/orders/0").status == 200, "/orders is forwarded while the backend is up")
u = upstream(aport, "b")
c.check(u.get("circuit", {}).get("state") == "closed" and u["circuit"].get("next_probe_at") is None,
        "admin: circuit closed, no next probe", u.get("circuit"))
c.done()
EOF

# 2. and 3. The backend goes away for 20 s.
sh_backend_stop rec
t_down=$(e2e_now_ms)
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/state.json" <<'EOF'
import hashlib, sys
from shaping import *
port, aport, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = Checks()
ids = {}
r = post(port, "/orders/1", {"X-Test-Seq": "1"})
c.check(r.status == 202, "a spill route's request whose connect is refused is spilled: 202, not 502",
        (r.status, r.body[:200]))
if r.status == 202:
    ids[1] = json.loads(r.body)["id"]
body = json.dumps({"pad": "x" * 3000}).encode()
r = post(port, "/wait/1", {"X-Test-Seq": "100"}, body)
c.check(r.status == 202 and r.elapsed >= 0.9,
        "a wait-mode request whose connect is refused is spilled, held for wait_timeout, then 202",
        (r.status, round(r.elapsed, 2), r.body[:200]))
wait_id = json.loads(r.body)["id"] if r.status == 202 else None
for i in range(2, 22):
    r = post(port, "/orders/%d" % i, {"X-Test-Seq": str(i)})
    c.check(r.status == 202, "POST %d while the backend is down: 202" % i, (r.status, r.body[:200]))
    if r.status == 202:
        ids[i] = json.loads(r.body)["id"]
save_json(state, {"ids": ids, "wait_id": wait_id,
                  "wait_sha": hashlib.sha256(body).hexdigest()[:16], "wait_len": len(body)})


def opened():
    u = upstream(aport, "b")
    return u if u.get("circuit", {}).get("state") in ("open", "half-open") else None


u = wait_for(opened, 5, "the circuit to open", state=lambda: upstream(aport, "b"))
log("admin during the outage: %s" % u)
cb = u["circuit"]
c.check(cb.get("consecutive_failures", 0) >= 3, "admin: at least 3 consecutive failures", cb)
c.check(isinstance(cb.get("next_probe_at"), str) and RFC3339_MS_RE.match(cb["next_probe_at"]) is not None,
        "admin: the next probe's time (RFC 3339)", cb)
c.check("eta_seconds" in u and u["eta_seconds"] is None,
        "admin: eta_seconds is null while the circuit is open", u.get("eta_seconds"))
st = get(port, "/_sluice/requests/" + ids[21]).json() if 21 in ids else {}
c.check(st.get("status") == "queued" and "eta_seconds" in st and st["eta_seconds"] is None,
        "status URL: queued, eta_seconds null", st)
sm = metrics(aport)
open_v = metric(aport, "sluice_upstream_circuit_state", sm, upstream="b", state="open")
half_v = metric(aport, "sluice_upstream_circuit_state", sm, upstream="b", state="half-open")
closed_v = metric(aport, "sluice_upstream_circuit_state", sm, upstream="b", state="closed")
c.check(closed_v == 0 and (open_v or 0) + (half_v or 0) == 1,
        "sluice_upstream_circuit_state: open (or half-open), not closed", (closed_v, half_v, open_v))
fails = metric(aport, "sluice_upstream_circuit_failures", sm, upstream="b")
c.check((fails or 0) >= 3, "sluice_upstream_circuit_failures >= 3", fails)
probe = metric(aport, "sluice_upstream_circuit_next_probe_timestamp_seconds", sm, upstream="b")
c.check(probe is not None and time.time() - 5 < probe < time.time() + 10,
        "sluice_upstream_circuit_next_probe_timestamp_seconds is the next probe's time", probe)
opens = metric(aport, "sluice_upstream_circuit_opens_total", sm, upstream="b")
c.check(opens == 1, "sluice_upstream_circuit_opens_total is 1 (one outage, one opening)", opens)
eta = metric(aport, "sluice_drain_eta_seconds", sm, upstream="b")
c.check(eta is not None and eta != eta, "sluice_drain_eta_seconds is NaN while the circuit is open", eta)

# A live-only route: 503 with Retry-After at once (a request that happens to be due as the
# probe goes to the backend and gets 502: at most one of three).
answers = []
for _ in range(3):
    r = get(port, "/live/b")
    answers.append((r.status, r.header("retry-after"), round(r.elapsed, 3)))
    time.sleep(0.2)
log("/live while open: %s" % answers)
good = [a for a in answers if a[0] == 503 and a[1] and int(a[1]) >= 1 and a[2] < 0.5]
c.check(len(good) >= 2 and all(a[0] in (502, 503) for a in answers),
        "/live while the circuit is open: 503 with Retry-After >= 1, at once", answers)
c.done()
EOF

# Down for 20 s in all, replays failing (probes) all along.
while [ $(($(e2e_now_ms) - t_down)) -lt 20000 ]; do sleep 0.2; done
python3 - "$SLUICE_ADMIN_PORT" <<'EOF'
import sys
from shaping import *
u = upstream(int(sys.argv[1]), "b")
log("after 20 s down: %s" % u)
expect(u.get("circuit", {}).get("state") in ("open", "half-open"),
       "the circuit is still open after 20 s down", u)
expect(u.get("dead") == 0, "nothing dead-lettered by the outage", u)
EOF

# 4. Back up on the same port.
sh_backend_start -n rec2 --port "$rport"
python3 - "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$E2E_WORK/rec2.jsonl" "$E2E_WORK/state.json" \
  "$E2E_WORK/sluice.err" <<'EOF'
import sys
from shaping import *
port, aport, rec_log, state, slog = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                     sys.argv[5])
c = Checks()
st = load_json(state)
ids = {int(k): v for k, v in st["ids"].items()}
t = time.time()
wait_for(lambda: all(get(port, "/_sluice/requests/" + i).json().get("status") == "delivered"
                     for i in ids.values()), 20,
         "every queued request to be delivered after the backend came back",
         state=lambda: upstream(aport, "b"))
took = time.time() - t
log("all %d queued requests delivered %.2fs after the backend came back" % (len(ids), took))
c.check(took <= 5.0, "every queued request delivered within 5 s of the backend answering again",
        "%.2fs" % took)
c.check(len(ids) == 21, "21 requests were queued", len(ids))
c.check(st["wait_id"] is not None and wait_for(
    lambda: get(port, "/_sluice/requests/" + st["wait_id"]).json().get("status") == "delivered", 5,
    "the /wait request to be delivered"), "the /wait request is delivered")
seqs = by_seq(read_log(rec_log))
w = seqs.get(100, [{}])[-1]
c.check(w.get("body_len") == st["wait_len"] and w.get("body_sha") == st["wait_sha"],
        "the /wait request reached the backend with its body intact", w)
c.check(all(s in seqs and seqs[s][-1]["h"].get("x-sluice-request-id") == ids[s] for s in ids),
        "each reached the backend with its id", sorted(set(ids) - set(seqs)))
u = upstream(aport, "b")
c.check(u["circuit"]["state"] == "closed" and u["circuit"]["consecutive_failures"] == 0
        and u["circuit"]["next_probe_at"] is None, "admin: circuit closed again", u["circuit"])
c.check(u.get("eta_seconds") is not None, "admin: an ETA again", u.get("eta_seconds"))
c.check(u.get("dead") == 0, "nothing dead-lettered", u)
c.check(get(port, "/live/c").status == 200, "/live is forwarded again")
text = open(slog, errors="replace").read()
c.check(re.search(r"upstream b: circuit open after \d+ consecutive failures .*next probe at "
                  r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text) is not None,
        "the log says when the circuit opened, with the next probe's time", None)
c.check("upstream b: circuit closed" in text, "the log says when it closed", None)
c.done()
EOF
e2e_sluice_stop
