#!/usr/bin/env bash
# Runs the Go benchmarks BENCH_COUNT times (for benchstat's statistics), saves
# the result as _output/bench/<time>-<commit>.txt, and compares it with
# benchstat against a baseline: BENCH_BASE if set, else the newest earlier
# result in _output/bench.
#
#   hack/benchstat.sh                            # run, save, compare with the last run
#   BENCH_BASE=_output/bench/x.txt hack/benchstat.sh
#   BENCH='Evaluate' BENCH_PKGS=./pkg/policy hack/benchstat.sh
#
# Each run records the commit and whether the tree was dirty; check out an
# older commit and run it there to get a baseline for a change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH=${BENCH:-.}
BENCH_COUNT=${BENCH_COUNT:-6}
BENCH_PKGS=${BENCH_PKGS:-./...}
OUT_DIR=_output/bench

TOOLS=$(hack/install-bench-tools.sh)
mkdir -p "$OUT_DIR"
base=${BENCH_BASE:-$(ls -1t "$OUT_DIR"/*.txt 2>/dev/null | head -n1 || true)}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty || true)
new="$OUT_DIR/$(date +%Y%m%d-%H%M%S)-$commit$dirty.txt"

echo "benchstat: go test -bench '$BENCH' -count $BENCH_COUNT $BENCH_PKGS -> $new" >&2
{
	echo "commit: $commit$dirty"
	echo "load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
	go test -run '^$' -bench "$BENCH" -benchmem -count "$BENCH_COUNT" $BENCH_PKGS
} | tee "$new.tmp" >&2
mv "$new.tmp" "$new"

if [[ -n $base && -f $base && $base != "$new" ]]; then
	echo "benchstat: $base (old) vs $new (new)" >&2
	"$TOOLS/benchstat" -ignore commit,load old="$base" new="$new"
else
	"$TOOLS/benchstat" "$new"
fi
