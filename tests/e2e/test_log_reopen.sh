#!/usr/bin/env bash
# log.file and log.access_file, and SIGUSR1 reopening them (logrotate's way):
#   - with both set from the start, the error log and the access log go to those files, none
#     of it to stderr or stdout;
#   - after the files were renamed, lines still go to the renamed files until SIGUSR1; after
#     it, new files at the configured paths take the new lines, and the renamed ones keep
#     the old lines, whole;
#   - a path that cannot be opened is logged, and both logs go on in their old files; a later
#     SIGUSR1 reopens them once the path is back;
#   - a reload follows a changed config: the access log moves to its new path, and the error
#     log goes back to stderr when log.file is removed.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start
logs=$E2E_WORK/logs
mkdir -p "$logs"

config() { # config LOG_SETTINGS
  cat <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0"; };
log = { level = "info"; access = true; $1 };
spool = { dir = "$E2E_WORK/spool"; fsync = "off"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
}
conf=$(config "file = \"$logs/error.log\"; access_file = \"$logs/access.log\";" |
  e2e_write_config sluice.conf)

# sluice logs "listening on" into log.file: start it by hand and read the port there.
e2e_spawn sluice "$SLUICE" -c "$conf"
: >"$E2E_WORK/sluice.is_sluice"
listening() { grep -E 'listening on 127\.0\.0\.1:[0-9]+' "$logs/error.log" 2>/dev/null | grep -v admin; }
e2e_wait_until "$E2E_START_TIMEOUT" "sluice to log 'listening on' into log.file" listening
port=$(listening | head -n 1 | sed -E 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/')
e2e_log "sluice (pid $(e2e_pid sluice)) listens on 127.0.0.1:$port, logging into $logs"

get() { e2e_assert_eq 200 "$(e2e_http_status "http://127.0.0.1:$port/items/$1")" "GET /items/$1"; }
# count FILE TAG: the access log lines of /items/TAG<n> in FILE.
count() { grep -c "GET /items/$2[0-9]* HTTP" "$1" 2>/dev/null || true; }
has_lines() { [ "$(count "$1" "$2")" -ge "$3" ]; }
wait_lines() { # wait_lines FILE TAG N
  e2e_wait_until 5 "$3 access log lines of /items/$2* in $(basename "$1")" has_lines "$1" "$2" "$3"
}

get a1
get a2
get a3
wait_lines "$logs/access.log" a 3
e2e_assert_file_match 'sluice .* started' "$logs/error.log" "the start-up line in log.file"
e2e_assert_eq "" "$(cat "$E2E_WORK/sluice.out")" "stdout with log.access_file set"
e2e_assert_eq "" "$(cat "$E2E_WORK/sluice.err")" "stderr with log.file set"

# Rotation: rename, and the lines keep going to the renamed files until the signal.
mv "$logs/access.log" "$logs/access.log.1"
mv "$logs/error.log" "$logs/error.log.1"
get b1
wait_lines "$logs/access.log.1" b 1
[ ! -e "$logs/access.log" ] || e2e_fail "access.log was created before SIGUSR1"
e2e_signal sluice USR1
e2e_wait_until 5 "'log files reopened' in a new error.log" grep -q "log files reopened" "$logs/error.log"
get c1
get c2
wait_lines "$logs/access.log" c 2
sleep 0.5 # more than a flush period of the access log: nothing else may arrive
e2e_assert_eq 2 "$(grep -c . "$logs/access.log")" "lines in the new access.log (c1, c2 only)"
e2e_assert_eq 3 "$(count "$logs/access.log.1" a)" "a-lines in the renamed access.log.1"
e2e_assert_eq 1 "$(count "$logs/access.log.1" b)" "b-lines in the renamed access.log.1"
e2e_assert_eq 0 "$(count "$logs/access.log.1" c)" "c-lines in the renamed access.log.1"
e2e_assert_file_match "SIGUSR1: reopening the log files" "$logs/error.log.1" \
  "the signal, in the old error log"
if grep -q "listening on" "$logs/error.log"; then e2e_fail "start-up lines in the new error.log"; fi

# A path that cannot be opened: the error is logged, in the old file, which stays in use.
mv "$logs" "$logs.moved"
: >"$logs" # a file where the directory was: ENOTDIR
e2e_signal sluice USR1
e2e_wait_until 5 "the access log's reopen error in the error log" grep -qF \
  "cannot reopen the access log (log.access_file), it goes on where it was: $logs/access.log: Not a directory" \
  "$logs.moved/error.log"
e2e_assert_file_match "cannot reopen the error log \(log.file\)" "$logs.moved/error.log" \
  "the error log's reopen error"
get d1
wait_lines "$logs.moved/access.log" d 1
e2e_assert_eq "" "$(cat "$E2E_WORK/sluice.err")" "stderr after a failed reopen"
rm "$logs"
mv "$logs.moved" "$logs"
reopened_twice() { [ "$(grep -c 'log files reopened' "$logs/error.log")" -ge 2 ]; }
e2e_signal sluice USR1
e2e_wait_until 5 "a second 'log files reopened' once the directory is back" reopened_twice

# A reload moves the access log to its new path, and the error log back to stderr.
config "access_file = \"$logs/access2.log\";" >"$conf"
e2e_signal sluice HUP
e2e_wait_log sluice err "log files reopened" 5
e2e_assert_file_match "reloaded $conf" "$logs/error.log" "the reload, in the error log file"
get e1
wait_lines "$logs/access2.log" e 1
e2e_assert_eq 0 "$(count "$logs/access.log" e)" "e-lines in the old access.log"
e2e_sluice_stop
e2e_assert_file_match "shutdown complete" "$E2E_WORK/sluice.err" "the shutdown, on stderr again"

# A log file that cannot be opened at start-up: sluice says so on stderr and exits 1.
config "file = \"$E2E_WORK/no/such/dir/error.log\";" >"$conf"
e2e_spawn broken "$SLUICE" -c "$conf"
e2e_expect_exit broken
st=$(e2e_wait_exit broken 10) || e2e_fail "sluice with an unopenable log.file did not exit"
e2e_assert_eq 1 "$st" "exit status with an unopenable log.file"
e2e_assert_file_match "^sluice: cannot open a log file: $E2E_WORK/no/such/dir/error.log: No such file or directory\$" \
  "$E2E_WORK/broken.err" "the message of an unopenable log.file"
