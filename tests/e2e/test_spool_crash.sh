#!/usr/bin/env bash
#
# Spool crash test: a writer process appends, acks and retries records as
# fast as it can and logs each completion; it is killed with SIGKILL at a
# random moment, the spool is reopened by a checker, and the checker fails
# if a record whose append completed is missing or unreadable, or if a
# record whose ack completed came back. Twelve rounds on the same spool, so
# later rounds also recover what earlier kills left behind.
#
# Runs under tests/e2e/run.sh (SLUICE names the sluice binary; the
# spool_bench program sits in bench/ of the same build directory), or alone:
#   SPOOL_BENCH=build/bench/spool_bench tests/e2e/test_spool_crash.sh
set -u

bench=${SPOOL_BENCH:-}
if [ -z "$bench" ] && [ -n "${SLUICE:-}" ]; then
  bench=$(dirname "$SLUICE")/bench/spool_bench
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
  echo "test_spool_crash: spool_bench not found (set SPOOL_BENCH)" >&2
  exit 1
fi
own_work=0
if [ -n "${E2E_WORK:-}" ]; then
  work=$E2E_WORK
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/spool-crash.XXXXXX")
  own_work=1
fi
spool=$work/spool
log=$work/crash.log
rounds=${SPOOL_CRASH_ROUNDS:-12}
: >"$log"
writer=""
cleanup() {
  if [ -n "$writer" ]; then
    kill -9 "$writer" 2>/dev/null
    wait "$writer" 2>/dev/null
  fi
}
trap cleanup EXIT

# Under the 60 s budget even with sanitizers: stop starting rounds after 35 s.
deadline=$((SECONDS + 35))
for round in $(seq 1 "$rounds"); do
  # The writer never exits by itself; its stderr goes to the work directory.
  "$bench" crashwriter "$spool" "$log" "$round" 2>>"$work/writer.err" &
  writer=$!
  # Between 50 ms and 1.5 s: some kills land during open/recovery, most mid-traffic.
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.05 + (r % 1450) / 1000 }')"
  kill -9 "$writer" 2>/dev/null
  wait "$writer" 2>/dev/null
  writer=""
  if ! out=$("$bench" crashcheck "$spool" "$log" 2>"$work/check.err"); then
    echo "test_spool_crash: round $round: check failed: $out" >&2
    cat "$work/check.err" >&2
    exit 1
  fi
  echo "round $round: $out ($(grep -c '^A' "$log") appends completed so far)"
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "test_spool_crash: stopping after $round rounds (time budget)"
    break
  fi
done
echo "test_spool_crash: passed"
if [ "$own_work" = 1 ]; then
  rm -rf "$work"
fi
