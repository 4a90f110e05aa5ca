#!/usr/bin/env bash
# The installed systemd unit passes `systemd-analyze verify` (it runs without systemd as
# PID 1): its settings parse, the programs it runs exist at the paths it names, and its
# Documentation= man pages are found (MANPATH points at the installed ones). verify prints a
# bad setting and still exits 0, so any output fails the test as well as a non-zero status;
# a broken copy of the unit must fail the same check, so the check itself is tested.
. "$(dirname "$0")/lib.sh"

command -v systemd-analyze >/dev/null || t_fail "systemd-analyze not found (Debian package 'systemd')"
prefix=$T_WORK/prefix
t_install "$prefix"
unit=$prefix/lib/systemd/system/sluice.service

# verify_unit FILE: prints what systemd-analyze verify says and returns its status (non-zero
# also when it said anything).
verify_unit() {
  local out rc=0
  out=$(cd "$(dirname "$1")" && MANPATH=$prefix/share/man SYSTEMD_LOG_COLOR=0 \
    timeout 60 systemd-analyze verify "./$(basename "$1")" 2>&1) || rc=$?
  printf '%s' "$out"
  [ "$rc" -eq 0 ] && [ -z "$out" ]
}

out=$(verify_unit "$unit") || t_fail "systemd-analyze verify $unit:
$out"
t_log "ok: systemd-analyze verify $unit passes"

# The check catches a broken unit: a misspelt setting, a program that is not there, a man
# page that is not installed.
mkdir -p "$T_WORK/broken"
while IFS='|' read -r what from to; do
  sed "s|$from|$to|" "$unit" >"$T_WORK/broken/sluice.service"
  cmp -s "$unit" "$T_WORK/broken/sluice.service" && t_fail "the broken case '$what' changed nothing"
  if out=$(verify_unit "$T_WORK/broken/sluice.service"); then
    t_fail "systemd-analyze verify passed a unit with $what"
  fi
  t_log "ok: a unit with $what fails verify ($(printf '%s' "$out" | head -n 1))"
done <<CASES
a bad setting value|^ProtectSystem=strict|ProtectSystem=sometimes
a missing program|^ExecStart=$prefix/sbin/sluice|ExecStart=$prefix/sbin/no-sluice
a missing man page|man:sluice(8)|man:no-sluice(8)
CASES
