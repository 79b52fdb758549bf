#!/usr/bin/env bash
# Builds helm from the Go module proxy into a cache by version and prints its
# path (progress on stderr). Usage: HELM=$(hack/install-helm.sh)
#
# helm.sh/helm/v3 has no replace directives, so `go install` at a version
# works directly (unlike k8s.io/kubernetes, see hack/tools). The -X flags are
# those of helm's own Makefile: `helm version` says $version, and the default
# Kubernetes version of `helm template`/`helm lint` is that of the client-go
# helm is built with (1.37 for v3.22.0) instead of the source's 1.20.
set -euo pipefail
version=v3.22.0
k8s_minor=37 # helm $version's k8s.io/client-go is v0.37.x
dir=${IMAGEGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imagegate}/helm-$version
bin=$dir/helm
if [[ ! -x $bin ]] || [[ $("$bin" version --short 2>/dev/null) != "$version"* ]]; then
	echo "install-helm: building helm $version into $dir (once; cold ~3 min on 2 cores)" >&2
	start=$SECONDS
	mkdir -p "$dir"
	rm -rf "$dir/.tmp"
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
	done
	CGO_ENABLED=0 GOBIN="$dir/.tmp" GOFLAGS=-mod=mod go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version"
	mv -f "$dir/.tmp/helm" "$bin"
	rmdir "$dir/.tmp"
	echo "install-helm: built in $((SECONDS - start))s" >&2
fi
echo "$bin"
