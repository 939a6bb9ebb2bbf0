#!/bin/sh
# fuzz.sh - build the libFuzzer targets with clang (build-fuzz/) and run every fuzz_* ctest.
#
#   scripts/fuzz.sh [seconds-per-target] [ctest -R regex]
#
# Each target fuzzes a scratch copy of tests/fuzz/corpus/<name>/ under
# build-fuzz/tests/fuzz/work/<name>/; a crashing input lands in .../artifacts/.
set -eu

seconds=${1:-15}
filter=${2:-'^fuzz_'}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
jobs=$(nproc 2>/dev/null || echo 2)

case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 [seconds-per-target] [ctest-regex]" >&2; exit 2 ;;
esac

CC=clang cmake -S "$root" -B "$build" -G Ninja -DLK_FUZZ=ON -DLK_FUZZ_SECONDS="$seconds" >/dev/null
cmake --build "$build" --target lk_fuzz_all
ctest --test-dir "$build" -L '^fuzz$' -R "$filter" -j "$jobs" --output-on-failure
