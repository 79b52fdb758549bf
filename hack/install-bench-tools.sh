#!/usr/bin/env bash
# Builds the measurement tools from the Go module proxy, once, into
# $IMAGEGATE_CACHE_DIR/bench-tools/bin (default ~/.cache/imagegate/...), and
# prints that directory on stdout (progress goes to stderr):
#
#   - vegeta:    the load generator hack/bench.sh drives (constant-rate, open
#                model: it does not wait for an answer before the next request)
#   - benchstat: compares Go benchmark runs (hack/benchstat.sh)
#
# Each is rebuilt only when the pinned version changes. Idempotent.
set -euo pipefail

VEGETA_VERSION=v12.13.0
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da # golang.org/x/perf has no tags
CACHE_DIR=${IMAGEGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imagegate}
BIN_DIR="$CACHE_DIR/bench-tools/bin"

log() { printf '[install-bench-tools] %s\n' "$*" >&2; }

# install NAME PACKAGE VERSION: go install PACKAGE@VERSION as BIN_DIR/NAME,
# unless BIN_DIR/NAME.version already says VERSION.
install() {
	local name=$1 pkg=$2 version=$3 stamp="$BIN_DIR/$1.version"
	if [[ -x $BIN_DIR/$name && -f $stamp && $(<"$stamp") == "$version" ]]; then
		log "$name $version (cached)"
		return
	fi
	mkdir -p "$BIN_DIR"
	log "go install $pkg@$version ..."
	# Outside any module, so the repository's go.mod is not involved.
	(cd / && GOBIN="$BIN_DIR" go install "$pkg@$version")
	echo "$version" >"$stamp"
	log "$name $version: built"
}

command -v go >/dev/null 2>&1 || {
	log "go is not on PATH"
	exit 1
}
install vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION"
install benchstat golang.org/x/perf/cmd/benchstat "$BENCHSTAT_VERSION"
echo "$BIN_DIR"
