"""The checks of test_shaping_expiry.sh, in two phases around sluice's kill -9 and restart:

  expiry.py before SLUICE_PORT ADMIN_PORT REC_LOG
  expiry.py after SLUICE_PORT ADMIN_PORT REC_LOG

"before" spills the records (the upstream paused), lets some expire and checks every outcome,
then leaves two records queued for the restart (their ids in REC_LOG.ids); "after" checks that
the deadline held across the restart."""
import sys
import time

from shaping import *


def status_of(port, rid):
    """The JSON of request <rid>'s status URL ({"http": code} for an answer other than 200)."""
    r = get(port, "/_sluice/requests/" + rid)
    return (r.json() or {}) if r.status == 200 else {"http": r.status}


def spill(port, path, seq, headers=None):
    """POSTs <path> with X-Test-Seq <seq>, checks that it was spilled (202) and returns its id."""
    h = {"X-Test-Seq": str(seq)}
    h.update(headers or {})
    r = post(port, path, h)
    return check_accept_body(r, "POST %s (seq %d)" % (path, seq), held=True)["id"]


def resume_fast(aport):
    """Raises upstream b's rate to 50/s and resumes its drain."""
    admin(aport, "POST", "/admin/upstreams/b/rate?value=50", expect_status="2xx")
    admin(aport, "POST", "/admin/upstreams/b/resume", expect_status="2xx")


def before(port, aport, rec_log, c):
    r = post(port, "/primer")
    c.check(r.status == 200, "the primer is forwarded live (the one token)", r)

    # Bad headers: 400 with a specific message, nothing stored.
    for value, want in (("soon", "X-Sluice-Expires-After is not a duration"),
                        ("0s", "X-Sluice-Expires-After is not a duration greater than 0"),
                        ("2d", "X-Sluice-Expires-After is beyond limits.max_delay (1d)")):
        r = post(port, "/bad", {"X-Sluice-Expires-After": value, "X-Test-Seq": "99"})
        c.check(r.status == 400 and want in (r.json() or {}).get("error", ""),
                "X-Sluice-Expires-After: %s gets 400 saying %r" % (value, want), r)

    ids = {
        1: spill(port, "/a", 1, {"X-Sluice-Expires-After": "1s"}),    # header alone: dead
        2: spill(port, "/drop/b", 2),                                  # route alone: drop
        3: spill(port, "/ttl/c", 3, {"X-Sluice-Expires-After": "1s"}), # header 1s < route 1h: expires
        4: spill(port, "/drop/d", 4, {"X-Sluice-Expires-After": "1h"}),# route 1s < header 1h: expires
        5: spill(port, "/e", 5, {"X-Sluice-Expires-After": "1h"}),    # does not expire: delivered
        6: spill(port, "/f", 6),                                       # no expiry at all: delivered
        7: spill(port, "/ttl/g", 7),                                   # route 1h: delivered
    }
    # Delayed past its expiry: due in 2 s, expired after 1 s (the TTL counts from acceptance).
    r = post(port, "/h", {"X-Test-Seq": "8", "X-Sluice-Delay": "2s", "X-Sluice-Expires-After": "1s"})
    ids[8] = check_accept_body(r, "POST /h delayed 2s, expiring after 1s", held=True)["id"]
    s = status_of(port, ids[1])
    c.check(s.get("status") == "queued", "before its deadline the status reads queued", s)

    time.sleep(1.3)
    resume_fast(aport)

    def status(i):
        return status_of(port, ids[i])

    wait_for(lambda: all(status(i).get("status") == "delivered" for i in (5, 6, 7)) and
             all(status(i).get("status") == "expired" for i in (1, 2, 3, 4, 8)), 10,
             "5, 6, 7 delivered and 1, 2, 3, 4, 8 expired",
             state=lambda: {i: status(i) for i in ids})
    time.sleep(0.3)
    seqs = by_seq(read_log(rec_log))
    for i in (1, 2, 3, 4, 8):
        c.check(i not in seqs, "the backend never saw expired record %d" % i, seqs.get(i))
        s = status(i)
        c.check(s.get("status") == "expired" and s.get("error") == "expired" and s.get("attempts") == 0,
                "status URL of %d: expired, reason expired, no attempt spent" % i, s)
    for i in (5, 6, 7):
        c.check(len(seqs.get(i, [])) == 1, "record %d was delivered once" % i, seqs.get(i))
        for e in seqs.get(i, []):
            c.check(not any(k.startswith("x-sluice-expir") for k in e["h"]),
                    "record %d reached the backend without the expiry field or header" % i, e["h"])
    c.check(99 not in seqs, "no refused request reached the backend", seqs.get(99))

    d = admin(aport, "GET", "/admin/upstreams/b/dead", expect_status=200).json().get("dead", [])
    c.check(sorted(x.get("id") for x in d) == sorted(ids[i] for i in (1, 3, 8)),
            "the dead letters are 1, 3 and 8 (on_expire dead); 2 and 4 were dropped",
            [(x.get("id"), x.get("error")) for x in d])
    c.check(all(x.get("error") == "expired" and x.get("dead_at") for x in d),
            "each expired dead letter gives the reason expired and a dead_at", d)
    sm = metrics(aport)
    c.check(metric(aport, "sluice_expired_total", sm, upstream="b", outcome="dead") == 3,
            "sluice_expired_total{outcome=dead} is 3",
            metric(aport, "sluice_expired_total", sm, upstream="b", outcome="dead"))
    c.check(metric(aport, "sluice_expired_total", sm, upstream="b", outcome="drop") == 2,
            "sluice_expired_total{outcome=drop} is 2",
            metric(aport, "sluice_expired_total", sm, upstream="b", outcome="drop"))
    c.check(not metric(aport, "sluice_drained_total", sm, upstream="b", outcome="dead"),
            "an expiry is no failed replay: sluice_drained_total{outcome=dead} stays 0",
            metric(aport, "sluice_drained_total", sm, upstream="b", outcome="dead"))
    u = upstream(aport, "b")
    c.check(u.get("ready") == 0 and u.get("delayed") == 0 and u.get("dead") == 3,
            "admin: nothing ready or delayed, 3 dead", u)

    # For the restart: paused again, one record that expires in 2 s and one that never does.
    admin(aport, "POST", "/admin/upstreams/b/pause", expect_status="2xx")
    admin(aport, "POST", "/admin/upstreams/b/rate?value=0.01", expect_status="2xx")
    post(port, "/primer2")  # takes the bucket's token if one is left: the next two spill
    ids[10] = spill(port, "/r1", 10, {"X-Sluice-Expires-After": "2s"})
    ids[11] = spill(port, "/r2", 11)
    save_json(rec_log + ".ids", ids)


def after(port, aport, rec_log, c):
    ids = {int(k): v for k, v in load_json(rec_log + ".ids").items()}

    def status(i):
        return status_of(port, ids[i])

    # The restart started paused (as configured): wait past the 2 s deadline, then resume.
    wait_for(lambda: status(10).get("status") == "queued", 10, "record 10 queued after the restart",
             state=lambda: status(10))
    time.sleep(2.2)
    resume_fast(aport)
    wait_for(lambda: status(11).get("status") == "delivered" and status(10).get("status") == "expired",
             10, "after the restart, 11 delivered and 10 expired",
             state=lambda: (status(10), status(11)))
    time.sleep(0.3)
    seqs = by_seq(read_log(rec_log))
    c.check(10 not in seqs, "the record that expired across the restart was never sent", seqs.get(10))
    c.check(len(seqs.get(11, [])) == 1, "the record that does not expire was delivered after it",
            seqs.get(11))
    d = admin(aport, "GET", "/admin/upstreams/b/dead", expect_status=200).json().get("dead", [])
    c.check(ids[10] in [x.get("id") for x in d], "it is a dead letter with the others",
            [x.get("id") for x in d])
    sm = metrics(aport)
    c.check(metric(aport, "sluice_expired_total", sm, upstream="b", outcome="dead") == 1,
            "the new process counts its one expiry", metric(aport, "sluice_expired_total", sm,
                                                            upstream="b", outcome="dead"))


def main():
    phases = {"before": before, "after": after}
    if len(sys.argv) != 5 or sys.argv[1] not in phases:
        sys.exit("usage: expiry.py before|after SLUICE_PORT ADMIN_PORT REC_LOG")
    c = Checks()
    phases[sys.argv[1]](int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], c)
    c.done()


if __name__ == "__main__":
    main()
