#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a while each.
# Usage: hack/fuzz.sh [FUZZTIME]   (default 10s)
# Environment:
#   FUZZ_PARALLEL   fuzzing workers per target (go test -parallel); default
#                   half the CPUs, at least 1, so that the coordinator and the
#                   rest of the machine keep a core
#   GO              the go command (default go)
#
# A failing target fails the run, with one exception, retried twice: Go's
# fuzzing coordinator (up to go1.26, golang/go#75804) can fail a target with
# a bare "context deadline exceeded" just as -fuzztime runs out, having found
# nothing; it happens on loaded machines (twice in a row for one target
# on a busy machine here, 2026-12-02). A target is run again, at most twice, only
# when its output is that and nothing else: the message alone under its
# "--- FAIL" line, no failing seed or panic, no "Failing input written to",
# and no new file in the package's testdata/fuzz/TARGET/. A real finding
# always writes its input there first, so it fails at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${1:-10s}
GO=${GO:-go}
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
parallel=${FUZZ_PARALLEL:-$((cpus / 2 > 0 ? cpus / 2 : 1))}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# corpus DIR TARGET: the files of TARGET's corpus in package directory DIR.
corpus() { find "$1/testdata/fuzz/$2" -type f 2>/dev/null | sort || true; }

# coordinator_deadline_only LOG: the run in LOG failed only by the
# coordinator's deadline race (see above).
coordinator_deadline_only() {
  grep -qxE '\s+context deadline exceeded' "$1" &&
    ! grep -q 'Failing input written to' "$1" &&
    ! grep -qE '^\s*--- FAIL: [^ ]+/' "$1" &&
    ! grep -qE '^panic: |fuzz: .*(crash|hang)|^\s+[a-z_]+_test\.go:[0-9]+:' "$1"
}

found=0 passed=0 retried=0 failed=()
for pkg in $($GO list ./...); do
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    found=$((found + 1))
    before=$(corpus "$dir" "$target")
    for attempt in 1 2 3; do
      again=""
      ((attempt == 1)) || again=", again"
      echo "==> $pkg $target ($fuzztime, -parallel $parallel$again)"
      rc=0
      $GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" 2>&1 |
        tee "$log" || rc=$?
      if ((rc == 0)); then
        passed=$((passed + 1))
        break
      fi
      if ((attempt < 3)) && [[ $(corpus "$dir" "$target") == "$before" ]] && coordinator_deadline_only "$log"; then
        echo "fuzz: $target failed with the fuzzing coordinator's bare \"context deadline exceeded\" (golang/go#75804), no input written: running it again"
        retried=$((retried + 1))
        continue
      fi
      failed+=("$pkg $target")
      break
    done
  done
done
[ "$found" -gt 0 ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
if ((${#failed[@]})); then
  printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
  echo "fuzz: $passed of $found targets passed; new failing inputs, if any, are under testdata/fuzz/ (git status)" >&2
  exit 1
fi
note=""
((retried == 0)) || note=" ($retried run(s) retried after the coordinator's deadline race)"
echo "fuzz: $found targets passed$note"
