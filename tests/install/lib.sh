# shellcheck shell=bash
#
# Helpers of the install tests (sourced by tests/install/test_*.sh). ctest runs each test with
# (tests/CMakeLists.txt):
#   BUILD_DIR       the build tree to install from (everything built)
#   SOURCE_DIR      the source tree
#   CMAKE           the cmake that configured it
#   HAVE_SLUICECTL  1 when the build has the sluicectl target
#   UNIT_TYPE       the unit's expected Type= (notify with libsystemd, else exec)
# Each test works in its own temporary directory, removed when it passes and kept (its path
# printed) when it fails; every command that could hang runs under timeout.
set -euo pipefail

: "${BUILD_DIR:?}" "${SOURCE_DIR:?}" "${CMAKE:?}" "${HAVE_SLUICECTL:?}" "${UNIT_TYPE:?}"

T_WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-install.XXXXXX")
t_finish() {
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    rm -rf "$T_WORK"
  else
    echo "install test: FAILED (exit $rc); work directory kept: $T_WORK" >&2
  fi
}
trap t_finish EXIT

t_log() { printf 'install test: %s\n' "$*" >&2; }
t_fail() {
  printf 'install test: FAIL: %s\n' "$*" >&2
  exit 1
}

# t_install PREFIX [DESTDIR]: cmake --install of the build tree, its output in the work dir.
t_install() {
  local prefix=$1 destdir=${2:-} log
  log=$T_WORK/install.$(echo "$destdir$prefix" | md5sum | cut -c1-8).log
  if ! DESTDIR=$destdir timeout 60 "$CMAKE" --install "$BUILD_DIR" --prefix "$prefix" >"$log" 2>&1; then
    cat "$log" >&2
    t_fail "cmake --install --prefix $prefix${destdir:+ with DESTDIR=$destdir} failed"
  fi
}

# t_man_pages: the section-qualified names of the man pages the build must install, one per
# line ("sluice.8"): one for each docs/man/NAME.SECTION.scd.
t_man_pages() {
  local f
  for f in "$SOURCE_DIR"/docs/man/*.scd; do
    basename "$f" .scd
  done
}
