#!/usr/bin/env bash
# Every installed man page renders without a single warning (man-db's man --warnings, and
# groff -ww), and sluice.conf(5) names every setting the config loader knows, as
# docs/configuration.md does: the three stay one description.
. "$(dirname "$0")/lib.sh"

command -v man >/dev/null || t_fail "man not found (Debian package 'man-db')"
prefix=$T_WORK/prefix
t_install "$prefix"

# render FILE: man -l with warnings on, then groff with every warning (-ww, through preconv
# as man does); prints the warnings, true when there were none.
render() {
  local err
  err=$(MANROFFSEQ='' MANWIDTH=80 timeout 30 man --warnings -E UTF-8 -l "$1" 2>&1 >"$T_WORK/page.txt") || {
    printf 'man exited non-zero: %s' "$err"
    return 1
  }
  err+=$(timeout 30 groff -k -man -ww -z -Tutf8 "$1" 2>&1) || err+=" (groff failed)"
  printf '%s' "$err"
  [ -z "$err" ] && [ -s "$T_WORK/page.txt" ]
}

n=0
while read -r page; do
  file=$prefix/share/man/man${page##*.}/$page
  [ -s "$file" ] || t_fail "$page: not installed at $file (is scdoc installed? Debian package 'scdoc')"
  out=$(render "$file") || t_fail "man -l $file warns:
$out"
  grep -q "^NAME" "$T_WORK/page.txt" || t_fail "$page: no NAME section in the rendered page"
  n=$((n + 1))
  t_log "ok: $page renders without warnings ($(wc -l <"$T_WORK/page.txt") lines)"
done < <(t_man_pages)
[ "$n" -ge 2 ] || t_fail "expected at least sluice(8) and sluice.conf(5), found $n pages"

# The check itself: a page with a roff error must fail it.
printf '.TH x 1\n.SH NAME\nx \\- y\n.BOGUS\n' >"$T_WORK/bad.1"
if render "$T_WORK/bad.1" >/dev/null; then t_fail "a page with an undefined macro rendered without warnings"; fi

# Every key of the config loader (the *_keys[] lists of src/config/config.c) is in
# sluice.conf(5) and in docs/configuration.md.
keys=$(sed -n '/^static const char \*const [a-z]*_keys\[\] = {/,/};/p' "$SOURCE_DIR/src/config/config.c" |
  grep -o '"[a-z_]*"' | tr -d '"' | sort -u)
[ "$(echo "$keys" | wc -l)" -ge 40 ] || t_fail "found only $(echo "$keys" | wc -l) config keys in config.c"
man_text=$(cat "$SOURCE_DIR/docs/man/sluice.conf.5.scd")
doc_text=$(cat "$SOURCE_DIR/docs/configuration.md")
for k in $keys; do
  grep -Eq "\*([a-z_]+\.)?$k\*" <<<"$man_text" || t_fail "sluice.conf(5) does not describe the setting '$k'"
  grep -Fq "\`$k\`" <<<"$doc_text" || t_fail "docs/configuration.md does not describe the setting '$k'"
done
t_log "ok: sluice.conf(5) and docs/configuration.md name all $(echo "$keys" | wc -l) settings"
