#!/usr/bin/env bash
# cmake --install honours --prefix and DESTDIR: into a temporary prefix, and into a DESTDIR
# with another prefix, every file an operator needs is where it belongs (binaries executable,
# man pages, the example configs, the systemd unit with this prefix's paths, the logrotate
# snippet) and nothing lands outside the tree; the installed sluice checks both installed
# configs (sluice -t).
. "$(dirname "$0")/lib.sh"

# check_tree ROOT PREFIX: the files of an install with prefix PREFIX, found under ROOT
# (ROOT = DESTDIR + PREFIX).
check_tree() {
  local root=$1 prefix=$2 f unit page section
  local -a execs=(sbin/sluice bin/sluice-demo-backend)
  local -a files=(share/doc/sluice/examples/sluice.conf share/sluice/sluice.conf
    lib/systemd/system/sluice.service etc/logrotate.d/sluice)
  [ "$HAVE_SLUICECTL" = 1 ] && execs+=(bin/sluicectl)
  while read -r page; do
    section=${page##*.}
    files+=("share/man/man$section/$page")
  done < <(t_man_pages)
  for f in "${execs[@]}"; do
    [ -f "$root/$f" ] && [ -x "$root/$f" ] || t_fail "$root/$f: missing or not executable"
  done
  for f in "${files[@]}"; do
    [ -s "$root/$f" ] || t_fail "$root/$f: missing or empty"
  done
  # Nothing else: every installed file is one of those.
  local listed
  listed=$(printf '%s\n' "${execs[@]}" "${files[@]}" | sort)
  local found
  found=$(cd "$root" && find . -type f | sed 's|^\./||' | sort)
  [ "$found" = "$listed" ] || t_fail "installed files under $root differ from the expected ones:
$(diff <(echo "$listed") <(echo "$found") || true)"

  # The unit names this prefix's sluice (not the build tree's, not another prefix's).
  unit=$root/lib/systemd/system/sluice.service
  grep -qx "ExecStart=$prefix/sbin/sluice -c /etc/sluice/sluice.conf" "$unit" ||
    t_fail "$unit: ExecStart does not run $prefix/sbin/sluice: $(grep '^ExecStart=' "$unit")"
  grep -qx "ExecReload=$prefix/sbin/sluice -t -c /etc/sluice/sluice.conf" "$unit" ||
    t_fail "$unit: no ExecReload checking the config with $prefix/sbin/sluice -t"
  grep -qx "Type=$UNIT_TYPE" "$unit" || t_fail "$unit: expected Type=$UNIT_TYPE, got $(grep '^Type=' "$unit")"
  ! grep -q '@[A-Z_]*@' "$unit" || t_fail "$unit: placeholders left: $(grep '@[A-Z_]*@' "$unit")"

  # The installed binary runs and accepts both installed configs.
  for f in share/sluice/sluice.conf share/doc/sluice/examples/sluice.conf; do
    timeout 10 "$root/sbin/sluice" -t -c "$root/$f" 2>"$T_WORK/t.err" ||
      t_fail "installed sluice -t -c $f: $(cat "$T_WORK/t.err")"
    grep -q "test is successful" "$T_WORK/t.err" || t_fail "sluice -t -c $f said: $(cat "$T_WORK/t.err")"
  done
  timeout 10 "$root/sbin/sluice" --version | grep -Eq '^sluice [0-9]' || t_fail "installed sluice --version"
  t_log "ok: $root (prefix $prefix)"
}

t_install "$T_WORK/prefix"
check_tree "$T_WORK/prefix" "$T_WORK/prefix"

# DESTDIR: the tree lands under it, while the unit names the prefix the package will have.
t_install /opt/sluice-test "$T_WORK/destdir"
check_tree "$T_WORK/destdir/opt/sluice-test" /opt/sluice-test
[ "$(cd "$T_WORK/destdir" && ls)" = opt ] || t_fail "DESTDIR holds more than opt/: $(ls "$T_WORK/destdir")"
[ ! -e /opt/sluice-test ] || t_fail "an install with DESTDIR wrote to /opt/sluice-test itself"
t_log "all install checks passed"
