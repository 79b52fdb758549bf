#!/usr/bin/env bash
# Builds golangci-lint from the Go module proxy into a cache by version and
# prints its path. Usage: GOLANGCI=$(hack/install-golangci-lint.sh)
set -euo pipefail
version=v2.6.2
dir=${IMAGEGATE_CACHE_DIR:-$HOME/.cache/imagegate}/golangci-lint-$version
bin=$dir/golangci-lint
if [ ! -x "$bin" ]; then
  echo "install-golangci-lint: building golangci-lint $version into $dir (once)" >&2
  start=$SECONDS
  mkdir -p "$dir"
  GOBIN="$dir/.tmp" GOFLAGS=-mod=mod go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$version"
  mv "$dir/.tmp/golangci-lint" "$bin"
  rmdir "$dir/.tmp"
  echo "install-golangci-lint: built in $((SECONDS - start))s" >&2
fi
echo "$bin"
