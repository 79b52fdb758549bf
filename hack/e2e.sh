#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/.. # so that shellcheck -x follows the sources below
# End-to-end test of imagegate against a real kube-apiserver.
#
# Starts etcd, kube-apiserver and imagegate on free loopback ports with
# throwaway certificates, wires the apiserver to imagegate with the files in
# examples/apiserver/ (so the documented configuration is what gets tested),
# drives the cluster with kubectl as a user would, and checks what the user
# sees. No kubelet runs: pods stay Pending, which is all admission needs.
# Some scenarios start a kube-apiserver of their own over the same etcd (for
# example validating_webhook: ValidatingAdmissionWebhook only, registered with
# the config/ manifests through hack/e2e/validating-overlay/).
#
# This file is the harness: it sources hack/e2e/lib.sh (output, processes,
# ports, checks), hack/e2e/controlplane.sh (certificates, etcd, apiservers,
# imagegate, the wiring between them) and one file per scenario, then runs
# the scenarios. To add one: write scenario_NAME in hack/e2e/SOMETHING.sh,
# source it below and add NAME to SCENARIOS.
#
# Usage: hack/e2e.sh [SCENARIO...]      (default: all; see SCENARIOS below)
# Environment:
#   IMAGEGATE_BIN=path    test this imagegate binary instead of building
#                         ./cmd/imagegate
#   E2E_KEEP_WORK=1       keep the temporary directory (logs, certificates,
#                         audit log) and print where it is
#   IMAGEGATE_CACHE_DIR   where kube-apiserver/kubectl are cached (see
#                         hack/install-e2e-tools.sh)
#
# Prints PASS/FAIL per check, and ends with the line "N passed, N failed".
# Exits non-zero when any check failed; then it also prints the tail of every
# component's log.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES="$ROOT/examples/apiserver"
REGISTRY=registry.my.com
SCENARIOS=(image_policy_webhook fail_closed validating_webhook mutual_tls policy_reload cert_rotation mutating_webhook digest_pinning image_volume controllers helm live_audit)

source "$ROOT/hack/e2e/lib.sh"
source "$ROOT/hack/e2e/controlplane.sh"
source "$ROOT/hack/e2e/image-policy-webhook.sh"
source "$ROOT/hack/e2e/validating-webhook.sh"
source "$ROOT/hack/e2e/mutual-tls.sh"
source "$ROOT/hack/e2e/policy-reload.sh"
source "$ROOT/hack/e2e/cert-rotation.sh"
source "$ROOT/hack/e2e/mutating-webhook.sh"
source "$ROOT/hack/e2e/digest-pinning.sh"
source "$ROOT/hack/e2e/image-volume.sh"
source "$ROOT/hack/e2e/controllers.sh"
source "$ROOT/hack/e2e/helm.sh"
source "$ROOT/hack/e2e/live-audit.sh"

TIMINGS= # "what Ns, " for the summary
BG_PIDS=() # background jobs (cert_rotation's request streams), for the cleanup

# cleanup: the EXIT trap. Stops everything, prints the summary line, and
# exits non-zero when a check failed or the run aborted.
cleanup() {
	local rc=$? pid
	set +e
	trap - EXIT INT TERM
	if ((rc != 0 && FAILED == 0)); then
		fail "the e2e run aborted before its checks finished (exit code $rc)"
	fi
	if ((FAILED > 0)) && [[ -n ${LOGS-} ]]; then
		dump_logs
	fi
	# Background request streams (cert_rotation), if a run stopped amid one.
	for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	# Order matters: imagegate, then the apiservers, then etcd. An apiserver
	# that loses etcd first hangs on to its port for a while.
	stop_all imagegate
	stop kube-controller-manager
	stop_all kube-apiserver
	stop etcd
	if [[ -n ${WORK-} ]]; then
		if [[ -n ${E2E_KEEP_WORK-} ]]; then
			say "kept $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	say "done in $((SECONDS - T0))s${TIMINGS:+ (}${TIMINGS%, }${TIMINGS:+)}"
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	if ((FAILED > 0)); then exit 1; fi
	exit 0
}

main() {
	local selected=("$@") s t
	((${#selected[@]})) || selected=("${SCENARIOS[@]}")
	for s in "${selected[@]}"; do
		declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (have: ${SCENARIOS[*]})"
	done

	# From here on, any exit prints the summary line and cleans up.
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	t=$SECONDS
	K8S_BIN=$("$ROOT/hack/install-e2e-tools.sh")
	KUBECTL=$K8S_BIN/kubectl
	say "tools ready in $((SECONDS - t))s: $K8S_BIN"

	WORK=$(mktemp -d "${TMPDIR:-/tmp}/imagegate-e2e.XXXXXX")
	LOGS=$WORK/logs
	mkdir -p "$LOGS"
	RUN_ID=$(printf '%04x%04x' $RANDOM $RANDOM)

	if [[ -n ${IMAGEGATE_BIN-} ]]; then
		IMAGEGATE=$IMAGEGATE_BIN
		say "using imagegate binary $IMAGEGATE"
	else
		t=$SECONDS
		IMAGEGATE=$WORK/imagegate
		(cd "$ROOT" && go build -o "$IMAGEGATE" ./cmd/imagegate) || die "go build ./cmd/imagegate failed"
		say "built imagegate in $((SECONDS - t))s"
	fi

	t=$SECONDS
	start_control_plane
	TIMINGS+="control plane $((SECONDS - t))s, "
	say "control plane up in $((SECONDS - t))s; $("$KUBECTL" version 2>/dev/null | tr '\n' ' ')"

	for s in "${selected[@]}"; do
		t=$SECONDS
		"scenario_$s"
		say "scenario $s took $((SECONDS - t))s"
		TIMINGS+="$s $((SECONDS - t))s, "
	done
}

main "$@"
