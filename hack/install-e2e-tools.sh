#!/usr/bin/env bash
# Installs what hack/e2e.sh needs to run a real control plane on this machine,
# and prints the directory holding the Kubernetes binaries on stdout (all
# progress goes to stderr, so callers can do BIN=$(hack/install-e2e-tools.sh)).
#
#   - etcd, curl, openssl, jq: Debian packages, installed with apt-get only when
#     the command is missing (CI starts on a fresh Debian machine with Go).
#   - kube-apiserver, kube-controller-manager and kubectl $K8S_VERSION: built
#     with "go build" from the tools module in hack/tools (k8s.io/kubernetes
#     cannot be "go install"ed directly, see hack/tools/go.mod) into
#     $IMAGEGATE_CACHE_DIR/k8s-$K8S_VERSION/bin, and only when a working binary
#     of that version is not there already. A cold build takes ~10 minutes on
#     2 cores; with Go's build cache warm it takes seconds.
#
# Idempotent: running it again does nothing but check.
set -euo pipefail

K8S_VERSION=v1.34.4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_MODULE="$ROOT/hack/tools"
CACHE_DIR=${IMAGEGATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imagegate}
BIN_DIR="$CACHE_DIR/k8s-$K8S_VERSION/bin"

log() { printf '[install-e2e-tools] %s\n' "$*" >&2; }

# timed DESCRIPTION CMD...: run CMD, then report how long it took.
timed() {
	local desc=$1 start=$SECONDS
	shift
	log "$desc ..."
	"$@"
	log "$desc: done in $((SECONDS - start))s"
}

as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	else
		sudo "$@"
	fi
}

APT_UPDATED=
apt_install() {
	# A fresh machine's package lists may be empty or stale: refresh them once
	# unless every package already has an install candidate.
	local pkg policy need_update=
	for pkg in "$@"; do
		policy=$(apt-cache policy "$pkg" 2>/dev/null || true)
		[[ $policy == *"Candidate: "[0-9]* ]] || need_update=1
	done
	if [[ -n $need_update && -z $APT_UPDATED ]]; then
		timed "apt-get update" as_root apt-get update -qq >&2
		APT_UPDATED=1
	fi
	timed "apt-get install $*" as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2
}

# Debian's packages for the commands e2e.sh uses.
ensure_debian_tools() {
	local missing=() cmd pkg
	for cmd in etcd:etcd-server curl:curl openssl:openssl jq:jq; do
		pkg=${cmd#*:}
		cmd=${cmd%%:*}
		if command -v "$cmd" >/dev/null 2>&1; then
			log "$cmd: $(command -v "$cmd") (already installed)"
		else
			missing+=("$pkg")
		fi
	done
	if ((${#missing[@]})); then
		apt_install "${missing[@]}"
	fi
	log "etcd: $(etcd --version 2>/dev/null | head -n1)"
}

# binary_ok NAME: true when $BIN_DIR/NAME exists and reports $K8S_VERSION.
binary_ok() {
	local bin="$BIN_DIR/$1" out
	[[ -x $bin ]] || return 1
	case $1 in
	kube-apiserver | kube-controller-manager) out=$("$bin" --version 2>/dev/null) || return 1 ;;
	kubectl) out=$("$bin" version --client 2>/dev/null) || return 1 ;;
	esac
	[[ $out == *"$K8S_VERSION"* ]]
}

# build_k8s NAME: build k8s.io/kubernetes/cmd/NAME from the tools module into
# $BIN_DIR, through a temporary name so that an interrupted build never leaves
# a binary that looks finished.
build_k8s() {
	local name=$1
	if binary_ok "$name"; then
		log "$name: $BIN_DIR/$name is $K8S_VERSION (cached)"
		return
	fi
	mkdir -p "$BIN_DIR"
	# Left-overs of interrupted builds: never used, just removed.
	rm -f "$BIN_DIR/.$name.tmp."*
	local tmp="$BIN_DIR/.$name.tmp.$$"
	# Stamp the version the way Kubernetes' own build does, so that
	# "--version", "kubectl version" and the apiserver's /version say
	# $K8S_VERSION instead of v0.0.0-master.
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ldflags="-s -w" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	trap 'rm -f "$tmp"' EXIT
	(cd "$TOOLS_MODULE" && timed "go build $name $K8S_VERSION (cold: ~10 min on 2 cores)" \
		go build -ldflags "$ldflags" -o "$tmp" "k8s.io/kubernetes/cmd/$name")
	mv -f "$tmp" "$BIN_DIR/$name"
	trap - EXIT
	if ! binary_ok "$name"; then
		log "$name: the binary just built does not report $K8S_VERSION"
		exit 1
	fi
	log "$name: built $BIN_DIR/$name"
}

main() {
	local start=$SECONDS
	command -v go >/dev/null 2>&1 || {
		log "go is not on PATH"
		exit 1
	}
	ensure_debian_tools
	build_k8s kube-apiserver
	build_k8s kube-controller-manager
	build_k8s kubectl
	log "all tools ready in $((SECONDS - start))s"
	echo "$BIN_DIR"
}

main "$@"
