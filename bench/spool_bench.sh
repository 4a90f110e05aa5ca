#!/bin/sh
# Runs the spool benchmarks in one go and prints every "result:" line.
#
#   bench/spool_bench.sh [BUILD_DIR] [SCRATCH_DIR]
#
# BUILD_DIR defaults to ./build (it must hold bench/spool_bench: build with
# -DCMAKE_BUILD_TYPE=Release). SCRATCH_DIR (default: a fresh mktemp -d on
# the disk under test) receives the spools and is removed at the end.
#
# The corpus: CORPUS_DIR must name a directory of request bodies, one per
# file. Generate it with the project's corpus generator:
#   python3 gen_corpus.py /tmp/corpus 20000
# (20,000 webhook-like JSON bodies, seed 20240601; see its README).
#
# SPOOL_BENCH_BIG=N also fills a spool with N records (e.g. 10000000: about
# 11 GB of requests, 2.8 GB on disk, several minutes) and measures reopening
# it and the RSS.
set -eu

build=${1:-build}
bench=$build/bench/spool_bench
if [ ! -x "$bench" ]; then
  echo "no $bench: cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release && cmake --build $build" >&2
  exit 2
fi
if [ -z "${CORPUS_DIR:-}" ] || [ ! -d "$CORPUS_DIR" ]; then
  echo "set CORPUS_DIR to a corpus directory (python3 gen_corpus.py /tmp/corpus 20000)" >&2
  exit 2
fi
scratch=${2:-$(mktemp -d "${TMPDIR:-/var/tmp}/spool-bench.XXXXXX")}
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
n=${SPOOL_BENCH_N:-1000000}

echo "# machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" disk --dir "$scratch/disk"
"$bench" ratio --corpus "$CORPUS_DIR" --level 1
"$bench" ratio --corpus "$CORPUS_DIR" --level 3 | grep -E "alone, zstd|64 KiB blocks with the 32"

for policy in batch off; do
  rm -rf "$scratch/s"
  "$bench" append --dir "$scratch/s" --corpus "$CORPUS_DIR" --policy "$policy" --n "$n"
done
rm -rf "$scratch/s"
# always: one fdatasync per append, so fewer of them: throughput, then latency at 1000/s.
"$bench" append --dir "$scratch/s" --corpus "$CORPUS_DIR" --policy always --n 5000
rm -rf "$scratch/s"
"$bench" append --dir "$scratch/s" --corpus "$CORPUS_DIR" --policy always --n 5000 --rate 1000
# latency added by the group commit at a steady rate
for rate in 20000 100000 200000; do
  rm -rf "$scratch/s"
  "$bench" append --dir "$scratch/s" --corpus "$CORPUS_DIR" --policy batch --n $((rate * 4)) \
    --rate "$rate"
done
# read + ack of what the last run left
"$bench" read --dir "$scratch/s" --n 100000000
# level 3 for comparison
rm -rf "$scratch/s"
"$bench" append --dir "$scratch/s" --corpus "$CORPUS_DIR" --policy batch --n "$n" --level 3
rm -rf "$scratch/s"

if [ -n "${SPOOL_BENCH_BIG:-}" ]; then
  "$bench" fill --dir "$scratch/big" --corpus "$CORPUS_DIR" --n "$SPOOL_BENCH_BIG"
  sync
  "$bench" reopen --dir "$scratch/big"
  # again with a cold page cache, if we may drop it
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 >/proc/sys/vm/drop_caches
    echo "# page cache dropped"
    "$bench" reopen --dir "$scratch/big"
  fi
fi
