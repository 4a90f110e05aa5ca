#!/usr/bin/env bash
# The command line: "sluice -t -c FILE" checks a config (exit 0 or 1, errors
# as "file:line: message" on stderr) without serving; --version; --help.
set -euo pipefail
. "$E2E_DIR/lib.sh"

# check NAME EXPECTED_EXIT [LINE]: runs "sluice -t -c $E2E_WORK/NAME" and
# checks the exit status and, for a bad config, that stderr names the file
# and LINE as "NAME:LINE: message".
check() {
  local name=$1 want=$2 line=${3:-} rc=0 err
  timeout 10 "$SLUICE" -t -c "$E2E_WORK/$name" >"$E2E_WORK/$name.stdout" 2>"$E2E_WORK/$name.stderr" || rc=$?
  err=$(cat "$E2E_WORK/$name.stderr")
  if [ "$rc" = 124 ]; then
    e2e_fail "sluice -t -c $name did not return within 10 s (it must only check, not serve)"
  fi
  e2e_assert_eq "$want" "$rc" "exit status of sluice -t -c $name (stderr: $err)"
  if [ -n "$line" ]; then
    e2e_assert_match "(^|/)${name//./\\.}:$line: [^ ].*" "$err" "error message of sluice -t -c $name"
  fi
  e2e_log "ok: -t $name -> $rc${line:+ ($(head -n 1 "$E2E_WORK/$name.stderr"))}"
}

upstream_port=$(e2e_free_port)

# A complete, valid config (every section), on an address that is in use:
# -t must not try to bind it.
busy_port=$(e2e_free_port)
e2e_write_config good.conf >/dev/null <<EOF
listen = "127.0.0.1:$busy_port";
admin = { listen = "127.0.0.1:0"; token = ""; };
log = { level = "debug"; access = false; };
limits = { max_header_bytes = "16KiB"; max_body_bytes = "1MiB"; header_timeout = "2s";
           body_timeout = "2s"; idle_timeout = "5s"; max_connections = 100;
           shutdown_timeout = "5s"; };
spool = { dir = "$E2E_WORK/spool"; fsync = "batch"; fsync_interval = "2ms";
          compression_level = 3; };
upstreams = (
  { name = "orders"; address = "127.0.0.1:$upstream_port";
    rate = 200.0; burst = 50; max_inflight = 32;
    connect_timeout = "1s"; response_timeout = "2s"; keepalive = 8;
    max_spool_bytes = "1GiB"; paused = false;
    retry = { max_attempts = 8; initial_backoff = "1s"; max_backoff = "5m";
              multiplier = 2.0; jitter = 0.2; }; }
);
routes = (
  { prefix = "/api/orders"; upstream = "orders"; spill = true; mode = "async";
    methods = [ "POST", "PUT" ]; },
  { prefix = "/"; upstream = "orders"; spill = false; queue_timeout = "5s"; }
);
EOF
python3 - "$busy_port" <<'EOF' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
time.sleep(8)
EOF
holder=$!
sleep 0.3
check good.conf 0
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true

# The minimal config: everything else has a default.
e2e_write_config minimal.conf >/dev/null <<EOF
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check minimal.conf 0

# Syntax error on line 3 (libconfig).
e2e_write_config syntax.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; };
limits = { max_body_bytes = ; };
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check syntax.conf 1 3

# A route naming an upstream that does not exist (the route is on line 5).
e2e_write_config unknown_upstream.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = (
  { prefix = "/"; upstream = "b"; },
  { prefix = "/x"; upstream = "nope"; }
);
EOF
check unknown_upstream.conf 1 5

# A duration that does not parse (line 3).
e2e_write_config bad_duration.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
limits = {
  header_timeout = "2 parsecs";
};
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check bad_duration.conf 1 3

# A size that does not parse (line 2).
e2e_write_config bad_size.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
limits = { max_body_bytes = "12 furlongs"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check bad_size.conf 1 2

# An address without a port (line 1).
e2e_write_config bad_listen.conf >/dev/null <<EOF
listen = "not an address";
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check bad_listen.conf 1 1

# A route prefix that is not a path (line 4).
e2e_write_config bad_prefix.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = (
  { prefix = "api"; upstream = "b"; }
);
EOF
check bad_prefix.conf 1 4

# Two upstreams with the same name (the second on line 4).
e2e_write_config dup_upstream.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
upstreams = (
  { name = "b"; address = "127.0.0.1:$upstream_port"; },
  { name = "b"; address = "127.0.0.1:$upstream_port"; }
);
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check dup_upstream.conf 1 4

# An unknown fsync policy (line 2).
e2e_write_config bad_fsync.conf >/dev/null <<EOF
listen = "127.0.0.1:0";
spool = { dir = "$E2E_WORK/spool"; fsync = "sometimes"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$upstream_port"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
check bad_fsync.conf 1 2

# A missing file: exit 1 and the path in the message.
rc=0
err=$(timeout 10 "$SLUICE" -t -c "$E2E_WORK/does-not-exist.conf" 2>&1 >/dev/null) || rc=$?
e2e_assert_eq 1 "$rc" "exit status of sluice -t -c on a missing file (output: $err)"
e2e_assert_match "does-not-exist\.conf" "$err" "message for a missing config file"

# Starting (not -t) on a bad config fails the same way, before serving.
rc=0
err=$(timeout 10 "$SLUICE" -c "$E2E_WORK/unknown_upstream.conf" 2>&1 >/dev/null) || rc=$?
e2e_assert_ne 124 "$rc" "sluice -c on a bad config must exit, not serve"
e2e_assert_ne 0 "$rc" "exit status of sluice -c on a bad config"
e2e_assert_match "(^|/)unknown_upstream\.conf:5: " "$err" "error of sluice -c on a bad config"

# --version and --help.
rc=0
out=$(timeout 10 "$SLUICE" --version 2>&1) || rc=$?
e2e_assert_eq 0 "$rc" "exit status of sluice --version"
e2e_assert_match "sluice.*[0-9]+\.[0-9]+\.[0-9]+" "$out" "output of sluice --version"

rc=0
out=$(timeout 10 "$SLUICE" --help 2>&1) || rc=$?
e2e_assert_eq 0 "$rc" "exit status of sluice --help"
e2e_assert_match "-c" "$out" "sluice --help mentions -c"
e2e_assert_match "-t" "$out" "sluice --help mentions -t"

rc=0
out=$(timeout 10 "$SLUICE" --no-such-option 2>&1) || rc=$?
e2e_assert_ne 0 "$rc" "exit status of sluice with an unknown option"
e2e_assert_ne 124 "$rc" "sluice with an unknown option must exit"

e2e_log "all command-line checks passed"
