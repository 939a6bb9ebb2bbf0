#!/bin/sh
# smoke.sh SOURCE_DIR BUILD_DIR PYTHON - run `scripts/bench --quick` into a temporary file and check
# that it wrote its table. Never judges a figure.
set -eu
src="$1" build="$2" py="$3"
tmp="$(mktemp -d /tmp/lk-bench-smoke-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
LK_PYTHON="$py" "$src/scripts/bench" --quick --no-build --build-dir "$build" --out "$tmp/benchmarks.md" \
    > "$tmp/stdout" 2> "$tmp/stderr" || { cat "$tmp/stderr" "$tmp/stdout" >&2; exit 1; }
cat "$tmp/stdout"
for want in "bench:begin" "bench:end" "| figure |" "one at a time" "throughput"; do
    grep -q -- "$want" "$tmp/benchmarks.md" || { echo "bench_smoke: '$want' missing from the output" >&2; exit 1; }
done
# the approval hop: both held requests were approved and answered, and the hop was counted
grep -q "2 held requests, one at a time, approved with lumkeyctl (2 answered 200) | [^|]* | [^|]* | [0-9]" \
    "$tmp/benchmarks.md" || { echo "bench_smoke: no approval hop measured" >&2; grep -i "held\|approval" "$tmp/benchmarks.md" >&2; exit 1; }
grep -q "| figure |" "$tmp/stdout" || { echo "bench_smoke: no table printed" >&2; exit 1; }
echo "bench_smoke: table written"
