#!/usr/bin/env bash
# sd_notify readiness, as systemd's Type=notify sees it: a datagram socket stands in for
# systemd's ($NOTIFY_SOCKET), and sluice must send READY=1 once it listens (and not before:
# the port answers by then), RELOADING=1 with a MONOTONIC_USEC of CLOCK_MONOTONIC and then
# READY=1 around a reload (a failed one too), and STOPPING=1 on SIGTERM. A build without
# libsystemd sends nothing (its unit is Type=exec): then there is nothing to test.
set -euo pipefail
. "$E2E_DIR/lib.sh"

if ! ldd "$SLUICE" | grep -q libsystemd; then
  e2e_log "sluice is built without libsystemd: no notifications to check"
  exit 0
fi

sock=$E2E_WORK/notify.sock
got=$E2E_WORK/notify.log
# One line per datagram: the receiver's CLOCK_MONOTONIC in microseconds, then the message
# with its newlines as '|'.
e2e_spawn notify python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as out:
    while True:
        msg = s.recv(4096).decode()
        out.write("%d %s\n" % (time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                               msg.replace("\n", "|")))
        out.flush()
' "$sock" "$got"
e2e_wait_until 5 "the notify socket" test -S "$sock"

e2e_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base)
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
)
NOTIFY_SOCKET=$sock e2e_sluice_start "$conf"
e2e_wait_until 5 "READY=1" grep -q ' READY=1$' "$got"
e2e_assert_eq "READY=1" "$(head -n 1 "$got" | cut -d' ' -f2-)" "the first notification"
e2e_assert_eq 200 "$(e2e_http_status "http://127.0.0.1:$SLUICE_PORT/x")" "a request once READY=1 came"

# messages: the notifications so far, without the receiver's times.
messages() { cut -d' ' -f2- "$got" | paste -sd' ' -; }
e2e_signal sluice HUP
e2e_wait_until 5 "READY=1 after the reload" bash -c "[ \$(grep -c ' READY=1\$' '$got') -ge 2 ]"
e2e_assert_match '^READY=1 RELOADING=1\|MONOTONIC_USEC=[0-9]+ READY=1$' "$(messages)" \
  "the notifications of a reload"
# MONOTONIC_USEC is CLOCK_MONOTONIC, as systemd reads it: within a few seconds of the
# receiver's clock when it arrived.
line=$(grep RELOADING "$got")
recv_us=${line%% *}
sent_us=$(sed -E 's/.*MONOTONIC_USEC=([0-9]+).*/\1/' <<<"$line")
skew=$((recv_us - sent_us))
[ "$skew" -ge 0 ] && [ "$skew" -lt 5000000 ] ||
  e2e_fail "MONOTONIC_USEC=$sent_us is not CLOCK_MONOTONIC (received at $recv_us)"

# A reload that fails still ends with READY=1: the running config serves on.
echo "this is not a config" >"$conf.bad"
cp "$conf" "$conf.good"
cp "$conf.bad" "$conf"
e2e_signal sluice HUP
e2e_wait_until 5 "READY=1 after the failed reload" bash -c "[ \$(grep -c ' READY=1\$' '$got') -ge 3 ]"
e2e_assert_file_match "reload failed" "$E2E_WORK/sluice.err" "the failed reload in the log"
cp "$conf.good" "$conf"

e2e_sluice_stop
e2e_assert_eq "STOPPING=1" "$(tail -n 1 "$got" | cut -d' ' -f2-)" "the last notification"
