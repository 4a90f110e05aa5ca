#!/usr/bin/env bash
# pid_file and admin.token_file:
#   - the pid file holds sluice's pid once it listens, and is gone after SIGTERM;
#   - a second sluice on the same pid file refuses to start, with a message naming the pid;
#     a stale pid file (a pid that is gone, or one reused by a process that is no sluice) is
#     overwritten;
#   - a changed pid_file on reload is a warning, and the pid file stays;
#   - the admin token comes from the file (blanks and newline around it ignored): 401
#     without it or with another, 200 with it; a reload reads the file again; a reload with
#     an empty file fails and the running token stays; sluice -t names the file and line.
set -euo pipefail
. "$E2E_DIR/lib.sh"

e2e_backend_start
mkdir -p "$E2E_WORK/run"
pidfile=$E2E_WORK/run/sluice.pid
tokfile=$E2E_WORK/admin.token
printf '  tok-one\n\n' >"$tokfile"
chmod 600 "$tokfile"

config() { # config PID_FILE
  cat <<EOF
listen = "127.0.0.1:0";
admin = { listen = "127.0.0.1:0";
          token_file = "$tokfile"; };
pid_file = "$1";
spool = { dir = "$E2E_WORK/spool"; fsync = "off"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$BACKEND_PORT"; } );
routes = ( { prefix = "/"; upstream = "b"; } );
EOF
}
conf=$(config "$pidfile" | e2e_write_config sluice.conf)

# A pid file left by a crash whose pid now belongs to another program (the backend) is stale.
e2e_pid backend >"$pidfile"
e2e_sluice_start "$conf"
e2e_assert_eq "$(e2e_pid sluice)" "$(cat "$pidfile")" "the pid in $pidfile"
e2e_assert_eq 0 "$(find "$E2E_WORK/run" -name '*.tmp' | wc -l)" "temporary files left in run/"

# admin_status [TOKEN]: the status of GET /admin/upstreams.
admin_status() {
  if [ $# -eq 0 ]; then
    e2e_http_status "http://127.0.0.1:$SLUICE_ADMIN_PORT/admin/upstreams"
  else
    e2e_http_status "http://127.0.0.1:$SLUICE_ADMIN_PORT/admin/upstreams" \
      -H "Authorization: Bearer $1"
  fi
}
e2e_assert_eq 401 "$(admin_status)" "the admin API without a token"
e2e_assert_eq 401 "$(admin_status tok-two)" "the admin API with another token"
e2e_assert_eq 200 "$(admin_status tok-one)" "the admin API with the file's token"

# A second sluice on the same pid file.
e2e_spawn sluice2 "$SLUICE" -c "$conf"
e2e_expect_exit sluice2
st=$(e2e_wait_exit sluice2 10) || e2e_fail "the second sluice did not exit"
e2e_assert_eq 1 "$st" "exit status of a second sluice on the same pid file"
e2e_assert_file_match "pid_file $pidfile: sluice is already running as pid $(e2e_pid sluice) " \
  "$E2E_WORK/sluice2.err" "the second sluice's message"
e2e_assert_eq "$(e2e_pid sluice)" "$(cat "$pidfile")" "the pid file after the second sluice gave up"

# Reload: a new token from the file; a changed pid_file is a warning.
printf 'tok-two' >"$tokfile"
config "$E2E_WORK/run/other.pid" >"$conf"
e2e_signal sluice HUP
e2e_wait_until 5 "the first reload" bash -c "[ \$(grep -c 'reloaded ' '$E2E_WORK/sluice.err') -ge 1 ]"
e2e_assert_eq 401 "$(admin_status tok-one)" "the old token after the reload"
e2e_assert_eq 200 "$(admin_status tok-two)" "the file's new token after the reload"
e2e_assert_file_match "a changed pid_file applies at the next restart; the pid file stays $pidfile" \
  "$E2E_WORK/sluice.err" "the warning of a changed pid_file"
[ ! -e "$E2E_WORK/run/other.pid" ] || e2e_fail "a reload wrote the new pid_file"
config "$pidfile" >"$conf"

# An empty token file: the reload fails and the running token stays; sluice -t says why.
printf ' \n' >"$tokfile"
e2e_signal sluice HUP
e2e_wait_log sluice err "reload failed, keeping the running config: .*admin.token_file: $tokfile is empty" 5
e2e_assert_eq 200 "$(admin_status tok-two)" "the running token after a failed reload"
rc=0
"$SLUICE" -t -c "$conf" 2>"$E2E_WORK/t.err" || rc=$?
e2e_assert_eq 1 "$rc" "sluice -t with an empty token file"
e2e_assert_file_match "^$conf:3: admin.token_file: $tokfile is empty\$" "$E2E_WORK/t.err" "sluice -t's message"

# SIGTERM removes the pid file.
e2e_sluice_stop
[ ! -e "$pidfile" ] || e2e_fail "$pidfile is still there after SIGTERM: $(cat "$pidfile")"

# A pid file naming a process that is gone is stale too.
sleep 0 &
gone=$!
wait "$gone"
echo "$gone" >"$pidfile"
printf 'tok-three\n' >"$tokfile"
e2e_sluice_start -n again "$conf"
e2e_assert_eq "$(e2e_pid again)" "$(cat "$pidfile")" "the pid file over a stale one"
e2e_assert_eq 200 "$(admin_status tok-three)" "the token read at start-up"
e2e_sluice_stop again
[ ! -e "$pidfile" ] || e2e_fail "$pidfile is still there after the second SIGTERM"

# A pid file that cannot be written: sluice logs why, stops again and exits 1.
config "$E2E_WORK/no/such/dir/sluice.pid" >"$conf"
e2e_spawn nopid "$SLUICE" -c "$conf"
e2e_expect_exit nopid
st=$(e2e_wait_exit nopid 15) || e2e_fail "sluice with an unwritable pid_file did not exit"
e2e_assert_eq 1 "$st" "exit status with an unwritable pid_file"
e2e_assert_file_match "pid_file $E2E_WORK/no/such/dir/sluice.pid: cannot write: No such file or directory" \
  "$E2E_WORK/nopid.err" "the message of an unwritable pid_file"
