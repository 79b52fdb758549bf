#!/usr/bin/env bash
# End-to-end test of imagegate against a real kube-apiserver.
#
# Starts etcd, kube-apiserver and imagegate on free loopback ports with
# throwaway certificates, wires the apiserver to imagegate with the files in
# examples/apiserver/ (so the documented configuration is what gets tested),
# drives the cluster with kubectl as a user would, and checks what the user
# sees. No kubelet runs: pods stay Pending, which is all admission needs.
# The validating_webhook scenario starts a second kube-apiserver of its own
# (ValidatingAdmissionWebhook only, no ImagePolicyWebhook) and registers
# imagegate there with the config/ manifests, through the kustomize overlay in
# hack/e2e/validating-overlay/.
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
SCENARIOS=(image_policy_webhook fail_closed validating_webhook mutual_tls policy_reload cert_rotation mutating_webhook)

# ---------------------------------------------------------------------------
# Output and bookkeeping

PASSED=0
FAILED=0
T0=$SECONDS
TIMINGS= # "what Ns, " for the summary

say() { printf '==> [%3ds] %s\n' $((SECONDS - T0)) "$*"; }
indent() { sed 's/^/      | /'; }
pass() {
	PASSED=$((PASSED + 1))
	printf 'PASS: %s\n' "$1"
}
# fail DESCRIPTION [DETAIL]
fail() {
	FAILED=$((FAILED + 1))
	printf 'FAIL: %s\n' "$1"
	if [[ -n ${2-} ]]; then printf '%s\n' "$2" | indent; fi
}
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

# wait_for DESCRIPTION SECONDS PID CMD...: poll CMD every 0.5 s until it
# succeeds; give up after SECONDS, or at once when process PID (if not "-")
# has exited. When that process exited because its port was taken (between
# free_port and its bind, by some other program), return 2 instead of
# giving up, so that the caller can start it again on another port.
wait_for() {
	local desc=$1 timeout=$2 pid=$3 start=$SECONDS
	shift 3
	until "$@" >/dev/null 2>&1; do
		if [[ $pid != - ]] && ! kill -0 "$pid" 2>/dev/null; then
			if [[ -n ${PID_NAMES[$pid]-} ]] && log_since_start "${PID_NAMES[$pid]}" | grep -q 'address already in use'; then
				say "$desc: the process exited: its port was taken meanwhile"
				return 2
			fi
			die "$desc: the process exited (see its log below)"
		fi
		if ((SECONDS - start >= timeout)); then
			die "$desc: not ready after ${timeout}s"
		fi
		sleep 0.5
	done
	say "$desc: ready after $((SECONDS - start))s"
}

# ---------------------------------------------------------------------------
# Processes: each component runs in the background with its output in
# $LOGS/NAME.log and is stopped by PID.

declare -A PIDS=() PID_NAMES=()

# start NAME CMD...
start() {
	local name=$1
	shift
	printf '\n===== %s: starting %s\n' "$(date -u +%FT%TZ)" "$*" >>"$LOGS/$name.log"
	"$@" >>"$LOGS/$name.log" 2>&1 &
	PIDS[$name]=$!
	PID_NAMES[$!]=$name
	say "started $name (pid $!)"
}

# log_since_start NAME: NAME's log since its latest start.
log_since_start() {
	awk '/^===== .*: starting / { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$LOGS/$1.log"
}

# stop NAME: SIGTERM, wait up to 30 s, then SIGKILL.
stop() {
	local name=$1 pid=${PIDS[$1]-} i
	[[ -n $pid ]] || return 0
	unset "PIDS[$name]"
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name (pid $pid) still running after 30s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	say "stopped $name (pid $pid)"
}

dump_logs() {
	local f
	for f in "$LOGS"/*.log; do
		[[ -f $f && $f != */openssl.log ]] || continue
		printf '\n----- last 40 lines of %s\n' "$(basename "$f")"
		tail -n 40 "$f"
	done
	printf -- '-----\n\n'
}

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
	stop imagegate-warn
	stop imagegate-mtls
	stop imagegate-mirror
	stop imagegate
	stop kube-apiserver-vw
	stop kube-apiserver-mtls
	stop kube-apiserver-mw
	stop kube-apiserver
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

# free_port VAR: set VAR to a loopback TCP port that no socket uses and that
# this run has not handed out yet.
#
# Ports come from below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768-60999 by default), from which it
# picks the source port of every outgoing connection: a port from inside it
# could be taken by one of those (etcd's clients, kubectl, curl) between
# this check and the component's bind. Below it, only a program binding that
# very port explicitly can interfere, and the components' first starts retry
# on another port when that happens (wait_for returns 2).
TAKEN_PORTS=" "
PORT_RANGE=
free_port() {
	local p i lo hi
	if [[ -z $PORT_RANGE ]]; then
		read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { lo=32768 hi=60999; }
		if ((lo > 21000)); then
			PORT_RANGE="20000 $((lo - 1))"
		elif ((hi < 64000)); then
			PORT_RANGE="$((hi + 1)) 65000"
		else
			PORT_RANGE="20000 50000" # no room outside it: rely on the retries
		fi
		say "free ports from $PORT_RANGE (ephemeral range: $lo-$hi)"
	fi
	read -r lo hi <<<"$PORT_RANGE"
	for ((i = 0; i < 200; i++)); do
		p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
		[[ $TAKEN_PORTS == *" $p "* ]] && continue
		port_in_use "$p" && continue
		TAKEN_PORTS+="$p "
		printf -v "$1" '%s' "$p"
		return 0
	done
	die "no free port found in $PORT_RANGE"
}

# port_in_use PORT: some socket uses local TCP port PORT, in any state
# (listening, connected, TIME_WAIT), as ss(8) shows; without ss, something
# accepts connections on it.
port_in_use() {
	if command -v ss >/dev/null; then
		[[ -n $(ss -Htan "( sport = :$1 )" 2>/dev/null) ]]
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

# subst FILE OLD NEW: replace the literal text OLD by NEW in FILE, and fail when
# OLD is not there (the documented example changed: update this script).
subst() {
	local file=$1 old=$2 new=$3
	grep -qF -- "$old" "$file" || die "$file: expected to find '$old' (the file it was copied from changed?)"
	sed -i "s|$(sed_quote "$old")|$(sed_quote "$new")|g" "$file"
}
# sed_quote TEXT: TEXT with sed's special characters (for s|...|...|) escaped.
sed_quote() { sed 's/[][\\.*^$|&/]/\\&/g' <<<"$1"; }

# ---------------------------------------------------------------------------
# Set-up

make_certs() {
	local pki=$WORK/pki
	mkdir -p "$pki"
	(
		cd "$pki"
		openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key -out ca.crt \
			-subj "/CN=imagegate-e2e-ca" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"
		printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
			"extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" \
			"basicConstraints=CA:FALSE" >serving.ext
		# Serving certificates: one for imagegate, one for the apiserver.
		local name
		for name in imagegate kube-apiserver; do
			openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name"
			openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
				-days 1 -extfile serving.ext -out "$name.crt"
		done
		# The apiserver's service-account token signing pair.
		openssl genrsa -out sa.key 2048
		openssl rsa -in sa.key -pubout -out sa.pub
	) >>"$LOGS/openssl.log" 2>&1 || die "openssl failed: $(tail -n 5 "$LOGS/openssl.log")"
	say "certificates made in $pki"
}

# The documented apiserver-side wiring from examples/apiserver/, copied and
# pointed at this run's imagegate. Only paths, the URL and the cache TTLs
# change: short TTLs so that the apiserver's decision cache never answers for
# imagegate across checks.
write_apiserver_config() {
	local cfg=$WORK/apiserver
	mkdir -p "$cfg"
	cp "$EXAMPLES/admission-config.yaml" "$EXAMPLES/imagegate-kubeconfig.yaml" \
		"$EXAMPLES/audit-policy.yaml" "$cfg/"
	subst "$cfg/admission-config.yaml" \
		"kubeConfigFile: /etc/kubernetes/imagegate/imagegate-kubeconfig.yaml" \
		"kubeConfigFile: $cfg/imagegate-kubeconfig.yaml"
	subst "$cfg/admission-config.yaml" "allowTTL: 50" "allowTTL: 1"
	subst "$cfg/admission-config.yaml" "denyTTL: 50" "denyTTL: 1"
	grep -q '^ *defaultAllow: false' "$cfg/admission-config.yaml" ||
		die "examples/apiserver/admission-config.yaml no longer says defaultAllow: false"
	subst "$cfg/imagegate-kubeconfig.yaml" \
		"server: https://imagegate.example.internal:8443/image-policy" \
		"server: https://127.0.0.1:$IMAGEGATE_PORT/image-policy"
	subst "$cfg/imagegate-kubeconfig.yaml" \
		"certificate-authority: /etc/kubernetes/imagegate/ca.crt" \
		"certificate-authority: $WORK/pki/ca.crt"

	TOKEN=$(openssl rand -hex 16)
	printf '%s,e2e-admin,e2e-admin,system:masters\n' "$TOKEN" >"$cfg/tokens.csv"
	AUDIT_LOG=$WORK/audit.log

	# (start_apiserver writes it.)
	export KUBECONFIG=$WORK/kubeconfig KUBECACHEDIR=$WORK/kube-cache
}

# write_kubeconfig FILE PORT: kubectl's configuration for the apiserver on
# PORT, as the static-token admin, namespace default.
write_kubeconfig() {
	cat >"$1" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		  - name: e2e
		    cluster:
		      server: https://127.0.0.1:$2
		      certificate-authority: $WORK/pki/ca.crt
		users:
		  - name: e2e-admin
		    user:
		      token: $TOKEN
		contexts:
		  - name: e2e
		    context: {cluster: e2e, user: e2e-admin, namespace: default}
		current-context: e2e
	EOF
}

# start_etcd: etcd on ETCD_PORT and ETCD_PEER_PORT; returns 2 when one of
# them was taken (see on_free_ports).
start_etcd() {
	rm -rf "$WORK/etcd"
	start etcd etcd --name e2e --data-dir "$WORK/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT"
	wait_for etcd 60 "${PIDS[etcd]}" curl -fsS "http://127.0.0.1:$ETCD_PORT/health" || {
		stop etcd
		return 2
	}
}

# on_free_ports PORTVAR... -- CMD...: run CMD, a function that starts a
# component on the ports in the PORTVARs (read when it runs) and returns 2
# when one was taken before the component could bind it: then pick new
# ports and run it again, three tries in all. For first starts only: a
# restart must keep the port its callers already know.
on_free_ports() {
	local vars=() rc v
	while [[ $1 != -- ]]; do
		vars+=("$1")
		shift
	done
	shift
	for _ in 1 2 3; do
		rc=0
		"$@" || rc=$?
		((rc == 2)) || return "$rc"
		for v in "${vars[@]}"; do free_port "$v"; done
		say "$1: trying again on new ports ($(for v in "${vars[@]}"; do printf '%s=%s ' "$v" "${!v}"; done))"
	done
	die "$1: ports taken three times in a row"
}

# start_apiserver NAME PORTVAR KUBECONFIG [ARG...]: a kube-apiserver on the
# port in PORTVAR over this run's etcd, with the flags every apiserver here
# needs plus ARGs; writes KUBECONFIG to reach it. Returns once it serves the
# default and kube-system namespaces, or 2 when its port was taken (see
# on_free_ports).
start_apiserver() {
	local name=$1 portvar=$2 kubeconfig=$3 cfg=$WORK/apiserver ns
	shift 3
	write_kubeconfig "$kubeconfig" "${!portvar}"
	start "$name" "$K8S_BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
		--secure-port="${!portvar}" \
		--cert-dir="$WORK/$name-certs" \
		--tls-cert-file="$WORK/pki/kube-apiserver.crt" \
		--tls-private-key-file="$WORK/pki/kube-apiserver.key" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$WORK/pki/sa.pub" \
		--service-account-signing-key-file="$WORK/pki/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 \
		--endpoint-reconciler-type=none \
		--token-auth-file="$cfg/tokens.csv" \
		--authorization-mode=AlwaysAllow \
		--disable-admission-plugins=ServiceAccount \
		--v=2 "$@"
	# /readyz first, then the namespaces the apiserver creates in the
	# background after it says it is ready.
	wait_for "$name /readyz" 120 "${PIDS[$name]}" \
		"$KUBECTL" --kubeconfig "$kubeconfig" get --raw /readyz || {
		stop "$name"
		return 2
	}
	for ns in default kube-system; do
		wait_for "$name: namespace $ns" 60 "${PIDS[$name]}" \
			"$KUBECTL" --kubeconfig "$kubeconfig" get namespace "$ns"
	done
}

# The policy of every imagegate that brings none of its own: flags only.
FLAG_POLICY=(--registry-whitelist "$REGISTRY" --reject-latest=true --allow-break-glass=true)

# start_imagegate [NAME PORTVAR [ARG...]]: imagegate (default: the instance
# named imagegate on $IMAGEGATE_PORT) with this run's serving certificate and
# FLAG_POLICY, plus ARGs. As serve_imagegate.
# shellcheck disable=SC2120 # on_free_ports passes the arguments
start_imagegate() {
	local name=${1:-imagegate} portvar=${2:-IMAGEGATE_PORT}
	shift $(($# < 2 ? $# : 2))
	serve_imagegate "$name" "$portvar" \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		"${FLAG_POLICY[@]}" "$@"
}

# serve_imagegate NAME PORTVAR ARG...: imagegate serve, reviews on the port in
# PORTVAR, metrics on a port the kernel picks (read back from its log: see
# metrics_port), logging JSON at debug, plus ARGs: the serving certificate
# and the policy are the caller's. Returns once /readyz answers on the
# metrics listener (the kubelet's way, which works with --client-ca-file
# too), or 2 when the review port was taken (see on_free_ports).
serve_imagegate() {
	local name=$1 portvar=$2
	shift 2
	start "$name" "$IMAGEGATE" serve --listen "127.0.0.1:${!portvar}" --metrics-listen 127.0.0.1:0 \
		--log-format=json --log-level=debug "$@"
	wait_for "$name metrics listener" 30 "${PIDS[$name]}" metrics_port "$name" || {
		stop "$name"
		return 2
	}
	wait_for "$name /readyz" 30 "${PIDS[$name]}" curl -fsS "http://127.0.0.1:$(metrics_port "$name")/readyz"
}

# metrics_port NAME: the port of imagegate NAME's metrics listener, from the
# log of its latest start; fails while it has not said.
metrics_port() {
	log_since_start "$1" | jq -rR 'fromjson? | select(.msg == "serving metrics and health") | .address' |
		sed -nE 's/.*:([0-9]+)$/\1/p' | grep .
}

# metric NAME SERIES: the value of one series of imagegate NAME's metrics,
# written as exposed (imagegate_policy_reloads_total, or
# imagegate_reviews_total{decision="denied",endpoint="image-policy"}); 0 when
# it is not there.
metric() {
	curl -fsS "http://127.0.0.1:$(metrics_port "$1")/metrics" |
		awk -v s="$2" '$1 == s { v = $2 } END { print (v == "" ? 0 : v) }'
}

# ---------------------------------------------------------------------------
# Checks. Each prints one PASS or FAIL line; on FAIL it shows what kubectl said.

# kc ARGS...: run the built kubectl; sets KC_OUT (stdout and stderr) and KC_RC.
kc() {
	KC_RC=0
	KC_OUT=$("$KUBECTL" --request-timeout=60s "$@" 2>&1) || KC_RC=$?
}

# expect_ok DESCRIPTION -- KUBECTL-ARGS...: the command succeeds.
# expect_created is the same, named for what a create or run means.
expect_ok() {
	local desc=$1
	shift
	[[ ${1-} == -- ]] && shift
	kc "$@"
	if ((KC_RC == 0)); then
		pass "$desc"
	else
		fail "$desc" "kubectl $* (exit $KC_RC):"$'\n'"$KC_OUT"
	fi
}
expect_created() { expect_ok "$@"; }

# expect_refused DESCRIPTION REGEX... -- KUBECTL-ARGS...: the command fails and
# its output matches every extended REGEX, and none written !REGEX. What
# kubectl said is shown either way.
expect_refused() { expect_outcome refused "$@"; }

# expect_allowed DESCRIPTION REGEX... -- KUBECTL-ARGS...: the same for a
# command that must succeed (and say something, such as a warning).
expect_allowed() { expect_outcome allowed "$@"; }

expect_outcome() {
	local want=$1 desc=$2 regexes=() re missing=()
	shift 2
	while (($#)) && [[ $1 != -- ]]; do
		regexes+=("$1")
		shift
	done
	shift
	kc "$@"
	for re in "${regexes[@]}"; do
		if [[ $re == !* ]]; then
			! grep -Eq -- "${re#!}" <<<"$KC_OUT" || missing+=("$re")
		else
			grep -Eq -- "$re" <<<"$KC_OUT" || missing+=("$re")
		fi
	done
	if [[ $want == refused ]] && ((KC_RC == 0)); then
		fail "$desc" "kubectl $* succeeded, expected a refusal:"$'\n'"$KC_OUT"
	elif [[ $want == allowed ]] && ((KC_RC != 0)); then
		fail "$desc" "kubectl $* (exit $KC_RC), expected it to succeed:"$'\n'"$KC_OUT"
	elif ((${#missing[@]})); then
		fail "$desc" "kubectl $* (exit $KC_RC) did not match: ${missing[*]}"$'\n'"$KC_OUT"
	else
		pass "$desc"
		printf '%s\n' "$KC_OUT" | indent
	fi
}

# expect_output DESCRIPTION WANT -- KUBECTL-ARGS...: the command succeeds and
# prints WANT (a literal substring).
expect_output() {
	local desc=$1 want=$2
	shift 2
	[[ ${1-} == -- ]] && shift
	kc "$@"
	if ((KC_RC == 0)) && [[ $KC_OUT == *"$want"* ]]; then
		pass "$desc"
	else
		fail "$desc" "kubectl $* (exit $KC_RC), expected to see '$want':"$'\n'"$KC_OUT"
	fi
}

# expect_audit DESCRIPTION VERB [RESOURCE/]NAME [SUBRESOURCE] -- KEY=VALUE...:
# the apiserver's audit log ($AUDIT_LOG) has an event for that request on
# NAME (a pod unless RESOURCE says otherwise) whose annotations include every
# KEY=VALUE. The log is written as the request finishes, so poll for a few
# seconds.
expect_audit() {
	local desc=$1 verb=$2 name=${3#*/} res=pods sub="" kv start=$SECONDS events ev found=
	[[ $3 != */* ]] || res=${3%%/*}
	shift 3
	if [[ ${1-} != -- ]]; then
		sub=$1
		shift
	fi
	shift
	while [[ -z $found ]] && ((SECONDS - start < 10)); do
		events=$(jq -cR --arg res "$res" --arg name "$name" --arg verb "$verb" --arg sub "$sub" '
			fromjson? | select(.objectRef.resource == $res and .objectRef.name == $name
				and .verb == $verb and (.objectRef.subresource // "") == $sub
				and .stage == "ResponseComplete") | .annotations // {}' "$AUDIT_LOG" 2>/dev/null || true)
		while IFS= read -r ev; do
			[[ -n $ev ]] || continue
			for kv in "$@"; do
				jq -e --arg k "${kv%%=*}" --arg v "${kv#*=}" '.[$k] == $v' <<<"$ev" >/dev/null || continue 2
			done
			found=$ev
			break
		done <<<"$events"
		[[ -n $found ]] || sleep 0.5
	done
	if [[ -n $found ]]; then
		pass "$desc"
		printf '%s\n' "$found" | indent
	else
		fail "$desc" "no audit event for $verb $res/$name${sub:+/$sub} with $*; the events for it:
$(jq -cR --arg name "$name" 'fromjson? | select(.objectRef.name == $name) | {verb, stage, subresource: .objectRef.subresource, annotations}' "$AUDIT_LOG" 2>/dev/null)"
	fi
}

# denied IMAGE RULE: a regex for imagegate's reason about IMAGE (quoted as
# written) that names RULE ("is not allowed" for the registry rule, "latest"
# for the latest-tag rule).
# shellcheck disable=SC2001 # a character class is clearer than ${var//} here
denied() { printf 'image "%s": .*%s' "$(sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$1")" "$2"; }

# webhook_denied SOURCE IMAGE RULE: a regex for one violation in a validating
# webhook message: SOURCE (e.g. 'container "app"') using IMAGE, for RULE.
# [^;]* keeps it within one violation: the webhook joins them with "; ".
# shellcheck disable=SC2001 # as in denied()
webhook_denied() {
	printf '%s image "%s": [^;]*%s' "$1" "$(sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$2")" "$3"
}

# validate_reviews [JQ-CONDITION]: how many AdmissionReviews (POST /validate)
# the imagegate instances have logged so far, of those meeting the condition.
# Every review is logged (--log-level=debug) with its namespace, outcome and
# the images it judged, before the answer is sent.
validate_reviews() {
	cat "$LOGS"/imagegate*.log | jq -nR "[inputs | fromjson? |
		select(.msg == \"review\" and .endpoint == \"validate\") | select(${1:-true})] | length"
}

# Image names unique to this run, for checks that must not be answered by the
# apiserver's decision cache.
# fresh_image NAME [REGISTRY]: from $REGISTRY unless REGISTRY is given.
fresh_image() { printf '%s/e2e-%s-%s:1.0' "${2:-$REGISTRY}" "$RUN_ID" "$1"; }

# ---------------------------------------------------------------------------
# Scenarios. To add one: write scenario_NAME and add NAME to SCENARIOS.

DENIED='image policy webhook backend denied one or more images: '

# Issue 3 §1: the ImagePolicyWebhook path, as a user of kubectl sees it.
scenario_image_policy_webhook() {
	say "scenario: ImagePolicyWebhook admission"

	expect_created "pod from $REGISTRY with a tag is created" -- \
		run good --image="$REGISTRY/prometheus:2.6.1" --restart=Never
	expect_refused "pod from docker.io (prometheus:2.6.1) is refused: registry not allowed" \
		'pods "hub" is forbidden' "$DENIED" "$(denied prometheus:2.6.1 'is not allowed')" -- \
		run hub --image=prometheus:2.6.1 --restart=Never
	expect_refused "pod with a :latest image is refused: latest tag" \
		'pods "latest" is forbidden' "$DENIED" "$(denied "$REGISTRY/x:latest" latest)" -- \
		run latest --image="$REGISTRY/x:latest" --restart=Never
	expect_refused "pod with an untagged image is refused" \
		'pods "untagged" is forbidden' "$DENIED" "$(denied "$REGISTRY/x" latest)" -- \
		run untagged --image="$REGISTRY/x" --restart=Never

	# One init container and two containers, two of them bad: one review,
	# one refusal naming both bad images and not the good one.
	kc create -f "$ROOT/hack/e2e/mixed-pod.yaml"
	local desc="pod with 1 init + 2 containers, 2 bad, is refused with one message naming both"
	local problems=()
	((KC_RC != 0)) || problems+=("it was created")
	[[ $(grep -o "$DENIED" <<<"$KC_OUT" | wc -l) -eq 1 ]] || problems+=("not exactly one denial message")
	[[ $KC_OUT == *'pods "mixed" is forbidden'* ]] || problems+=("no 'pods \"mixed\" is forbidden'")
	[[ $KC_OUT == *'image "busybox:1.36"'* ]] || problems+=("init container image busybox:1.36 not named")
	[[ $KC_OUT == *'image "registry.my.com/sidecar:latest"'* ]] || problems+=("registry.my.com/sidecar:latest not named")
	[[ $KC_OUT != *'image "registry.my.com/app:1.0"'* ]] || problems+=("the good image registry.my.com/app:1.0 is named too")
	[[ $KC_OUT == *'is not allowed'* ]] || problems+=("no 'is not allowed' (registry rule)")
	if ((${#problems[@]} == 0)); then
		pass "$desc"
		printf '%s\n' "$KC_OUT" | indent
	else
		fail "$desc" "$(
			IFS=';'
			echo "${problems[*]}"
		)"$'\n'"$KC_OUT"
	fi

	# Break-glass: a pod that would be refused is let in by its annotation,
	# and the apiserver's audit log records imagegate's audit annotations
	# (prefixed by the plugin with imagepolicywebhook.image-policy.k8s.io/).
	expect_created "break-glass pod (ops.image-policy.k8s.io/break-glass=true) with a docker.io image is created" -- \
		run breakglass --image=prometheus:2.6.1 --restart=Never \
		--annotations=ops.image-policy.k8s.io/break-glass=true \
		--annotations=ops.image-policy.k8s.io/ticket=INC-1234
	expect_audit "audit log holds imagegate's break-glass=true and ticket=INC-1234 for the break-glass pod" \
		create breakglass -- \
		imagepolicywebhook.image-policy.k8s.io/break-glass=true \
		imagepolicywebhook.image-policy.k8s.io/ticket=INC-1234
	expect_created "break-glass pod (ops.image-policy.k8s.io/INC-999: break-glass) is created" -- \
		run breakglass-ticket --image=prometheus:2.6.1 --restart=Never \
		--annotations=ops.image-policy.k8s.io/INC-999=break-glass
	expect_audit "audit log holds break-glass=true for the ticket-keyed break-glass pod" \
		create breakglass-ticket -- imagepolicywebhook.image-policy.k8s.io/break-glass=true

	# The plugin reviews pod updates too (not status or other subresources):
	# a metadata-only change to an admitted pod is allowed, but taking the
	# break-glass annotation off a pod whose image is not allowed makes the
	# update itself be refused.
	expect_ok "updating an admitted pod (kubectl label) is allowed" -- \
		label pod good tier=web
	expect_refused "removing the break-glass annotation from the break-glass pod is refused" \
		'pods "breakglass" is forbidden' "$DENIED" "$(denied prometheus:2.6.1 'is not allowed')" -- \
		annotate pod breakglass ops.image-policy.k8s.io/break-glass-

	# Ephemeral containers (kubectl debug) go through the
	# pods/ephemeralcontainers subresource, which the plugin reviews too. The
	# pod is Pending (no kubelet) but ephemeral containers can still be added:
	# nothing in their validation asks for a node. The plugin reviews only the
	# pod's ephemeral containers then, not its other containers. (--profile is
	# explicit because kubectl 1.34 warns that its default, legacy, is
	# deprecated.)
	expect_refused "kubectl debug with a docker.io image on the (Pending) good pod is refused" \
		'pods "good" is forbidden' "$DENIED" "$(denied busybox:1.36 'is not allowed')" -- \
		debug good --profile=general --image=busybox:1.36 --container=debug-bad
	expect_created "kubectl debug with a $REGISTRY image is allowed" -- \
		debug good --profile=general --image="$REGISTRY/debug-tools:1.0" --container=debug-good
	expect_output "the allowed ephemeral container is on the pod, the refused one is not" "debug-good" -- \
		get pod good -o 'jsonpath={.spec.ephemeralContainers[*].name}'
	if [[ $KC_OUT == *debug-bad* ]]; then fail "the refused ephemeral container debug-bad is on the pod" "$KC_OUT"; fi
}

# Issue 3 §2: imagegate down means pods are refused (defaultAllow: false);
# back up, it works again. Fresh image names, so that no cached decision can
# answer instead of imagegate.
scenario_fail_closed() {
	say "scenario: imagegate stopped, then restarted"
	stop imagegate
	expect_refused "imagegate down: a pod with a $REGISTRY image is refused (fail closed)" \
		'pods "down" is forbidden: Post "https://127\.0\.0\.1:[0-9]+/image-policy\?timeout=30s"' 'connection refused' -- \
		run down --image="$(fresh_image down)" --restart=Never

	start_imagegate || die "imagegate: its port $IMAGEGATE_PORT was taken while it was down"
	expect_created "imagegate restarted: a pod with a $REGISTRY image is created" -- \
		run up --image="$(fresh_image up)" --restart=Never
	expect_refused "imagegate restarted: a docker.io image is refused with imagegate's reason" \
		'pods "up-hub" is forbidden' "$DENIED" "$(denied "e2e-$RUN_ID-hub:1.0" 'is not allowed')" -- \
		run up-hub --image="e2e-$RUN_ID-hub:1.0" --restart=Never
}

# Issue 3 §3: imagegate as a ValidatingAdmissionWebhook, registered with the
# config/ manifests, as a cluster that cannot set apiserver flags would run it.
#
# It runs on a kube-apiserver of its own, started here with the default
# admission plugins only (ValidatingAdmissionWebhook among them) and no
# ImagePolicyWebhook, over this run's etcd under a fresh prefix: so every
# verdict seen here is the webhook's (the plugin would otherwise judge plain
# pods first), and nothing registered here can reach the other scenarios,
# in any order or when run twice. The webhook configuration is still deleted
# at the end, and that is checked too.
#
# The webhook calls imagegate on loopback rather than the Service in config/
# (no kubelet runs to start imagegate's pods): hack/e2e/validating-overlay/
# patches that, and only that, into config/.
VW_RUNS=0
scenario_validating_webhook() {
	say "scenario: ValidatingAdmissionWebhook registered with config/ (own kube-apiserver, no ImagePolicyWebhook)"
	VW_RUNS=$((VW_RUNS + 1))
	local port warn_port overlay n ns e2e=$ROOT/hack/e2e
	local -x KUBECONFIG=$WORK/kubeconfig-vw
	local AUDIT_LOG=$WORK/audit-vw-$VW_RUNS.log
	local vw='admission webhook "validate\.imagegate\.dev" denied the request: '
	local audit_policy=$WORK/apiserver/audit-policy-vw.yaml
	free_port port
	free_port warn_port
	# Metadata level for pods and deployments: where the webhook's audit
	# annotations (validate.imagegate.dev/KEY) land.
	cat >"$audit_policy" <<-EOF
		apiVersion: audit.k8s.io/v1
		kind: Policy
		omitStages: [RequestReceived]
		rules:
		  - level: Metadata
		    resources:
		      - {group: "", resources: ["pods"]}
		      - {group: apps, resources: ["deployments"]}
		  - level: None
	EOF
	on_free_ports port -- start_apiserver kube-apiserver-vw port "$KUBECONFIG" \
		--etcd-prefix="/registry-validating-$VW_RUNS" \
		--audit-policy-file="$audit_policy" --audit-log-path="$AUDIT_LOG"

	# The manifests as shipped, checked by the apiserver without storing
	# them. A server dry run creates no namespace, so every namespaced object
	# in it would be refused with 'namespaces "imagegate" not found':
	# create the namespace for real first, from the same file.
	expect_ok "config/namespace.yaml is applied (a server dry run would not create the namespace)" -- \
		apply -f "$ROOT/config/namespace.yaml"
	expect_allowed "kubectl apply -k config/ --dry-run=server (unmodified manifests) succeeds" \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created \(server dry run\)$' \
		'^deployment\.apps/imagegate created \(server dry run\)$' \
		'^service/imagegate created \(server dry run\)$' \
		'^poddisruptionbudget\.policy/imagegate created \(server dry run\)$' \
		'^serviceaccount/imagegate created \(server dry run\)$' -- \
		apply -k "$ROOT/config" --dry-run=server
	expect_refused "the dry run stored no webhook configuration" 'NotFound|not found' -- \
		get validatingwebhookconfiguration imagegate

	# A workload that predates the policy, for the UPDATE checks below.
	expect_created "before the webhook is registered, Deployment legacy (nginx:1.25) is created" -- \
		create deployment legacy --image=nginx:1.25

	render_overlay overlay "$IMAGEGATE_PORT"
	expect_allowed "kubectl apply -k of the e2e overlay of config/ creates the webhook configuration" \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' -- \
		apply -k "$overlay"
	expect_webhook_config "$IMAGEGATE_PORT"
	await_kc "webhook validate.imagegate.dev is in force" "$vw" -- \
		create deployment probe --image=nginx:1.25 --dry-run=server || return 0

	# CREATE: refused at apply time, naming the containers.
	expect_refused "Deployment shop (1 init + 2 containers, 2 bad) is refused at kubectl apply, naming both bad containers and not the good one" \
		'Error from server \(Forbidden\): error when creating ".*shop-deployment\.yaml": '"$vw" \
		"$(webhook_denied 'init container "migrate"' registry.my.com/shop-migrate:latest latest)" \
		"$(webhook_denied 'container "proxy"' nginx:1.25 'is not allowed')" \
		'!container "app"' '!registry\.my\.com/shop:2\.1' -- \
		apply -f "$e2e/shop-deployment.yaml"
	expect_allowed "Deployment web ($REGISTRY/web:1.0) is created by kubectl apply" \
		'^deployment\.apps/web created$' -- apply -f "$e2e/web-deployment.yaml"

	# UPDATE: only images the old object did not have are judged.
	n=$(validate_reviews)
	expect_ok "kubectl scale deployment web is allowed" -- scale deployment web --replicas=3
	expect_reviews "kubectl scale was not sent to imagegate (the rules select deployments, not deployments/scale)" \
		$((n)) "$(validate_reviews)"
	n=$(validate_reviews '.namespace == "default" and .images == [] and .outcome == "allowed"')
	expect_ok "kubectl patch of legacy's replicas (it predates the policy: nginx:1.25) is allowed" -- \
		patch deployment legacy -p '{"spec":{"replicas":2}}'
	expect_reviews "that UPDATE was sent to imagegate and judged on its new images: none" \
		$((n + 1)) "$(validate_reviews '.namespace == "default" and .images == [] and .outcome == "allowed"')"
	expect_ok "kubectl rollout restart deployment legacy is allowed" -- rollout restart deployment legacy
	expect_refused "kubectl set image on legacy to nginx:1.27 is refused, naming only the new image" \
		"$vw" "$(webhook_denied 'container "nginx"' nginx:1.27 'is not allowed')" '!"nginx:1\.25"' -- \
		set image deployment/legacy nginx=nginx:1.27
	expect_refused "kubectl set image deployment/web web=nginx:1.25 is refused" \
		"$vw" "$(webhook_denied 'container "web"' nginx:1.25 'is not allowed')" -- \
		set image deployment/web web=nginx:1.25
	expect_allowed "kubectl set image deployment/web to $REGISTRY/web:1.1 is allowed" \
		'^deployment\.apps/web image updated$' -- set image deployment/web "web=$REGISTRY/web:1.1"

	# Pods, and kubectl debug (pods/ephemeralcontainers).
	expect_refused "a Pod with busybox:1.36 in namespace default is refused by the webhook" \
		'error when creating ".*restricted-pod\.yaml": '"$vw" \
		"$(webhook_denied 'container "tool"' busybox:1.36 'is not allowed')" -- \
		create -f "$e2e/restricted-pod.yaml"
	expect_created "a Pod with $REGISTRY/app:1.0 in namespace default is created" -- \
		run vw-good --image="$REGISTRY/app:1.0" --restart=Never
	expect_refused "kubectl debug with busybox:1.36 on that pod is refused, naming the ephemeral container" \
		"$vw" "$(webhook_denied 'ephemeral container "debug-bad"' busybox:1.36 'is not allowed')" -- \
		debug vw-good --profile=general --image=busybox:1.36 --container=debug-bad

	# The namespaceSelector: imagegate's own namespace and kube-system are
	# never sent to the webhook. (restricted-pod.yaml meets the Pod Security
	# level that config/namespace.yaml enforces in imagegate.)
	for ns in kube-system imagegate; do
		expect_created "the same busybox:1.36 Pod in namespace $ns is created (namespaceSelector exemption)" -- \
			create -n "$ns" -f "$e2e/restricted-pod.yaml"
	done
	expect_reviews "imagegate got no review from namespace kube-system or imagegate" \
		0 "$(validate_reviews '.namespace == "kube-system" or .namespace == "imagegate"')"

	# Break-glass on the pod template: created, the user is told, and the
	# apiserver audits it under the webhook's name.
	expect_allowed "Deployment breakglass (break-glass on its pod template) is created with imagegate's warnings" \
		'^Warning: imagegate: break-glass \(ticket INC-42\) bypassed the image policy; the override is recorded in the audit log$' \
		"^Warning: imagegate break-glass overrode: $(webhook_denied 'container "bg"' nginx:1.25 'is not allowed')" \
		'^deployment\.apps/breakglass created$' -- \
		apply -f "$e2e/breakglass-deployment.yaml"
	expect_audit "audit log holds validate.imagegate.dev/break-glass=true and ticket=INC-42 for it" \
		create deployments/breakglass -- \
		validate.imagegate.dev/break-glass=true validate.imagegate.dev/ticket=INC-42
	expect_refused "break-glass annotations on the Deployment itself, not its pod template, do not count: refused" \
		"$vw" "$(webhook_denied 'container "bg"' nginx:1.25 'is not allowed')" -- \
		apply -f "$e2e/breakglass-misplaced-deployment.yaml"

	# Warn mode: a second imagegate, the webhook re-pointed at it by applying
	# the overlay again.
	on_free_ports warn_port -- start_imagegate imagegate-warn warn_port --mode=warn
	render_overlay overlay "$warn_port"
	expect_allowed "kubectl apply -k of the overlay for imagegate --mode=warn updates the webhook configuration" \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate configured$' -- \
		apply -k "$overlay"
	expect_webhook_config "$warn_port"
	await_kc "webhook answers from imagegate --mode=warn" 'imagegate warn mode, not enforced' -- \
		create deployment probe --image=nginx:1.25 --dry-run=server || return 0
	expect_allowed "warn mode: Deployment shop is created, with a kubectl warning per violation" \
		"^Warning: imagegate warn mode, not enforced: $(webhook_denied 'init container "migrate"' registry.my.com/shop-migrate:latest latest)" \
		"^Warning: imagegate warn mode, not enforced: $(webhook_denied 'container "proxy"' nginx:1.25 'is not allowed')" \
		'!Warning: .*container "app"' '^deployment\.apps/shop created$' -- \
		apply -f "$e2e/shop-deployment.yaml"

	# failurePolicy: Fail, and the exemption that lets a cluster repair
	# itself while imagegate is down.
	stop imagegate-warn
	expect_refused "imagegate down: a Deployment with a $REGISTRY image is refused (failurePolicy: Fail)" \
		'failed calling webhook "validate\.imagegate\.dev"' \
		"Post \"https://127\.0\.0\.1:$warn_port/validate\?timeout=5s\"" 'connection refused' -- \
		create deployment down --image="$REGISTRY/web:1.0"
	expect_created "imagegate down: a Deployment in kube-system is still created" -- \
		create -n kube-system deployment repair --image=nginx:1.25

	# Leave no webhook behind.
	expect_ok "the webhook configuration is deleted" -- delete validatingwebhookconfiguration imagegate
	await_kc "webhook no longer called" '^deployment\.apps/probe created \(server dry run\)$' -- \
		create deployment probe --image=nginx:1.25 --dry-run=server &&
		pass "with the webhook configuration deleted, a nginx:1.25 Deployment passes again (imagegate is down)"
	stop kube-apiserver-vw
}

# Issue 6: caller authentication, both sides. imagegate runs with
# --client-ca-file and --allowed-client-names; an apiserver of its own (over
# this run's etcd under a fresh prefix, like the validating scenario) calls
# it through examples/apiserver/imagegate-kubeconfig-mtls.yaml as written,
# only its paths and URL changed, so the documented client certificate is
# what gets tested.
MTLS_RUNS=0
scenario_mutual_tls() {
	say "scenario: mutual TLS (--client-ca-file, --allowed-client-names) with the documented apiserver kubeconfig"
	MTLS_RUNS=$((MTLS_RUNS + 1))
	# port and ig_port are set and read by name (free_port, on_free_ports).
	# shellcheck disable=SC2034
	local port ig_port metrics_port name out rc
	local cfg=$WORK/apiserver-mtls pki=$WORK/pki-mtls
	local -x KUBECONFIG=$WORK/kubeconfig-mtls
	mkdir -p "$cfg" "$pki"
	# A client CA of its own, a certificate from it for the apiserver
	# (CN=kube-apiserver: allowed) and one for an intruder (CN=intruder).
	(
		cd "$pki"
		openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout client-ca.key -out client-ca.crt \
			-subj "/CN=imagegate-e2e-client-ca" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"
		printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment" \
			"basicConstraints=CA:FALSE" >client.ext
		for name in kube-apiserver intruder; do
			openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name"
			openssl x509 -req -in "$name.csr" -CA client-ca.crt -CAkey client-ca.key -CAcreateserial \
				-days 1 -extfile client.ext -out "$name.crt"
		done
	) >>"$LOGS/openssl.log" 2>&1 || die "openssl failed: $(tail -n 5 "$LOGS/openssl.log")"

	free_port port
	free_port ig_port
	# serve_imagegate waits for /readyz the kubelet's way, on the plain
	# metrics listener: the HTTPS one now wants a client certificate.
	on_free_ports ig_port -- serve_imagegate imagegate-mtls ig_port \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		--client-ca-file "$pki/client-ca.crt" --allowed-client-names kube-apiserver \
		--registry-whitelist "$REGISTRY"
	metrics_port=$(metrics_port imagegate-mtls)

	# imagegate's side, with curl.
	local url="https://127.0.0.1:$ig_port/readyz"
	expect_curl "no client certificate: refused at the TLS handshake" refused \
		--cacert "$WORK/pki/ca.crt" "$url"
	expect_curl "a certificate from the serving CA, not the client CA: refused at the TLS handshake" refused \
		--cacert "$WORK/pki/ca.crt" --cert "$WORK/pki/imagegate.crt" --key "$WORK/pki/imagegate.key" "$url"
	expect_curl "a client-CA certificate for CN=intruder (not in --allowed-client-names): refused at the TLS handshake" refused \
		--cacert "$WORK/pki/ca.crt" --cert "$pki/intruder.crt" --key "$pki/intruder.key" "$url"
	expect_curl "a client-CA certificate for CN=kube-apiserver is served" ok \
		--cacert "$WORK/pki/ca.crt" --cert "$pki/kube-apiserver.crt" --key "$pki/kube-apiserver.key" "$url"
	out=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics")
	if grep -q '^imagegate_client_auth_rejections_total{reason="name-not-allowed"} 1$' <<<"$out"; then
		pass "imagegate_client_auth_rejections_total counts the intruder"
	else
		fail "imagegate_client_auth_rejections_total counts the intruder" "$(grep imagegate_client_auth <<<"$out")"
	fi

	# The apiserver's side: the documented files, pointed at this imagegate.
	cp "$EXAMPLES/admission-config.yaml" "$EXAMPLES/imagegate-kubeconfig-mtls.yaml" "$cfg/"
	subst "$cfg/admission-config.yaml" \
		"kubeConfigFile: /etc/kubernetes/imagegate/imagegate-kubeconfig.yaml" \
		"kubeConfigFile: $cfg/imagegate-kubeconfig-mtls.yaml"
	subst "$cfg/admission-config.yaml" "allowTTL: 50" "allowTTL: 1"
	subst "$cfg/admission-config.yaml" "denyTTL: 50" "denyTTL: 1"
	subst "$cfg/imagegate-kubeconfig-mtls.yaml" \
		"server: https://imagegate.example.internal:8443/image-policy" \
		"server: https://127.0.0.1:$ig_port/image-policy"
	subst "$cfg/imagegate-kubeconfig-mtls.yaml" \
		"certificate-authority: /etc/kubernetes/imagegate/ca.crt" \
		"certificate-authority: $WORK/pki/ca.crt"
	subst "$cfg/imagegate-kubeconfig-mtls.yaml" \
		"client-certificate: /etc/kubernetes/imagegate/apiserver-client.crt" \
		"client-certificate: $pki/kube-apiserver.crt"
	subst "$cfg/imagegate-kubeconfig-mtls.yaml" \
		"client-key: /etc/kubernetes/imagegate/apiserver-client.key" \
		"client-key: $pki/kube-apiserver.key"
	on_free_ports port -- start_apiserver kube-apiserver-mtls port "$KUBECONFIG" \
		--etcd-prefix="/registry-mtls-$MTLS_RUNS" \
		--enable-admission-plugins=ImagePolicyWebhook \
		--admission-control-config-file="$cfg/admission-config.yaml"
	# defaultAllow: false, so a pod is only created if imagegate answered.
	expect_created "the apiserver presents its client certificate: a pod with a $REGISTRY image is created" -- \
		run mtls-ok --image="$(fresh_image mtls)" --restart=Never
	expect_refused "the apiserver presents its client certificate: a docker.io image is refused with imagegate's reason" \
		'pods "mtls-hub" is forbidden' "$DENIED" "$(denied "e2e-$RUN_ID-mtls:1.0" 'is not allowed')" -- \
		run mtls-hub --image="e2e-$RUN_ID-mtls:1.0" --restart=Never
	stop kube-apiserver-mtls
	stop imagegate-mtls
}

# Issue 8: the mutating webhook rewrites images to the mirror, and the
# policy judges the result. Like the validating scenario, on a
# kube-apiserver of its own (over this run's etcd under a fresh prefix), with
# config/ and its mutating-webhook component applied through the overlay in
# hack/e2e/mutating-overlay/ (both webhooks call an imagegate on loopback),
# and with ImagePolicyWebhook enabled too, configured from
# examples/apiserver/ and calling the same imagegate: the plugin validates
# after every mutating webhook has run, so it sees the rewritten images.
# That imagegate runs with the --registry-mirror the component ships
# (docker.io and quay.io into registry.my.com) and the run's flag policy
# (registry.my.com only, no latest).
MW_RUNS=0
scenario_mutating_webhook() {
	say "scenario: MutatingAdmissionWebhook from config/mutating-webhook (own kube-apiserver, with ImagePolicyWebhook)"
	MW_RUNS=$((MW_RUNS + 1))
	# port and ig_port are set and read by name (free_port, on_free_ports).
	# shellcheck disable=SC2034
	local port ig_port overlay mirror_args n
	local cfg=$WORK/apiserver-mw
	local -x KUBECONFIG=$WORK/kubeconfig-mw
	local mw_warn='Warning: imagegate rewrote'
	local vw='admission webhook "validate\.imagegate\.dev" denied the request: '
	local hub=registry.my.com/dockerhub
	free_port port
	free_port ig_port

	# The imagegate both webhooks and the plugin call, with the component's
	# own --registry-mirror argument, read from the rendered manifests.
	render_overlay overlay "$ig_port" mutating-overlay
	mapfile -t mirror_args < <("$KUBECTL" kustomize "$overlay" | grep -oE -- '--registry-mirror=[^"[:space:]]+')
	if ((${#mirror_args[@]} == 1)) && [[ ${mirror_args[0]} == *"docker.io=$hub"* ]]; then
		pass "config/mutating-webhook adds ${mirror_args[0]} to imagegate's arguments"
	else
		fail "config/mutating-webhook adds one --registry-mirror for docker.io" "${mirror_args[*]}"
	fi
	on_free_ports ig_port -- start_imagegate imagegate-mirror ig_port "${mirror_args[@]}"
	render_overlay overlay "$ig_port" mutating-overlay # the port may have changed

	# ImagePolicyWebhook as documented, pointed at that imagegate.
	mkdir -p "$cfg"
	cp "$EXAMPLES/admission-config.yaml" "$EXAMPLES/imagegate-kubeconfig.yaml" "$cfg/"
	subst "$cfg/admission-config.yaml" \
		"kubeConfigFile: /etc/kubernetes/imagegate/imagegate-kubeconfig.yaml" \
		"kubeConfigFile: $cfg/imagegate-kubeconfig.yaml"
	subst "$cfg/admission-config.yaml" "allowTTL: 50" "allowTTL: 1"
	subst "$cfg/admission-config.yaml" "denyTTL: 50" "denyTTL: 1"
	subst "$cfg/imagegate-kubeconfig.yaml" \
		"server: https://imagegate.example.internal:8443/image-policy" \
		"server: https://127.0.0.1:$ig_port/image-policy"
	subst "$cfg/imagegate-kubeconfig.yaml" \
		"certificate-authority: /etc/kubernetes/imagegate/ca.crt" \
		"certificate-authority: $WORK/pki/ca.crt"
	on_free_ports port -- start_apiserver kube-apiserver-mw port "$KUBECONFIG" \
		--etcd-prefix="/registry-mutating-$MW_RUNS" \
		--enable-admission-plugins=ImagePolicyWebhook \
		--admission-control-config-file="$cfg/admission-config.yaml"

	# The manifests as shipped, the component enabled as config/'s
	# kustomization.yaml says, checked by the apiserver without storing them.
	local shipped
	shipped=$(mktemp -d "$WORK/kustomize.XXXXXX")
	cp -R "$ROOT/config" "$shipped/config"
	subst "$shipped/config/kustomization.yaml" "# components:" "components:"
	subst "$shipped/config/kustomization.yaml" "#   - mutating-webhook" "  - mutating-webhook"
	expect_ok "config/namespace.yaml is applied (a server dry run would not create the namespace)" -- \
		apply -f "$ROOT/config/namespace.yaml"
	expect_allowed "kubectl apply -k config/ with the mutating-webhook component enabled --dry-run=server succeeds" \
		'^mutatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created \(server dry run\)$' \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created \(server dry run\)$' \
		'^deployment\.apps/imagegate created \(server dry run\)$' -- \
		apply -k "$shipped/config" --dry-run=server

	# A workload that predates the rewrite rules, for the UPDATE check.
	expect_created "before the webhooks are registered, Deployment legacy (nginx:1.25) is created" -- \
		create deployment legacy --image=nginx:1.25

	expect_allowed "kubectl apply -k of the e2e overlay creates both webhook configurations" \
		'^mutatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' -- \
		apply -k "$overlay"
	expect_mutating_webhook_config "$ig_port"
	await_kc "webhook mutate.imagegate.dev is in force" "^$hub/library/nginx:1\\.25\$" -- \
		run probe --image=nginx:1.25 --restart=Never --dry-run=server -o 'jsonpath={.spec.containers[0].image}' || return 0

	# The issue's example: the pod runs the mirrored image, says where it
	# came from, and both validations accept it.
	n=$(mirror_reviews image-policy "$hub/library/prometheus:2.6.1" allowed)
	expect_allowed "kubectl run --image=prometheus:2.6.1 creates the pod, and kubectl says it was rewritten" \
		"^$mw_warn container \"prom\" image \"prometheus:2\\.6\\.1\" to \"$hub/library/prometheus:2\\.6\\.1\" \\(mirror rule docker\\.io=$hub\\)\$" \
		'^pod/prom created$' -- \
		run prom --image=prometheus:2.6.1 --restart=Never
	expect_output "the pod's image is the mirrored one" "$hub/library/prometheus:2.6.1" -- \
		get pod prom -o 'jsonpath={.spec.containers[0].image}'
	expect_output "the pod carries imagegate.dev/original-images with the image as written" '{"prom":"prometheus:2.6.1"}' -- \
		get pod prom -o 'jsonpath={.metadata.annotations.imagegate\.dev/original-images}'
	expect_reviews "ImagePolicyWebhook asked imagegate about the mirrored image and allowed it" \
		$((n + 1)) "$(mirror_reviews image-policy "$hub/library/prometheus:2.6.1" allowed)"
	expect_reviews "the validating webhook judged the mirrored image and allowed it" \
		1 "$(mirror_reviews validate "$hub/library/prometheus:2.6.1" allowed)"
	expect_reviews "no validation ever saw prometheus:2.6.1 as written" \
		0 "$(mirror_reviews '' prometheus:2.6.1 '')"

	# A Deployment of a Docker Hub image: the template is rewritten, so its
	# pods will be too, and they carry the annotation.
	expect_allowed "Deployment hub (nginx:1.25) is created with the image rewritten" \
		"^$mw_warn container \"nginx\" image \"nginx:1\\.25\" to \"$hub/library/nginx:1\\.25\"" \
		'^deployment\.apps/hub created$' -- \
		create deployment hub --image=nginx:1.25
	expect_output "the Deployment's pod template runs $hub/library/nginx:1.25" "$hub/library/nginx:1.25" -- \
		get deployment hub -o 'jsonpath={.spec.template.spec.containers[0].image}'
	expect_output "the pod template carries imagegate.dev/original-images" '{"nginx":"nginx:1.25"}' -- \
		get deployment hub -o 'jsonpath={.spec.template.metadata.annotations.imagegate\.dev/original-images}'
	expect_allowed "kubectl set image on it to nginx:1.26 rewrites the new image" \
		"^$mw_warn container \"nginx\" image \"nginx:1\\.26\"" '^deployment\.apps/hub image updated$' -- \
		set image deployment/hub nginx=nginx:1.26
	expect_output "the template runs the mirrored nginx:1.26 and records it" \
		"$hub/library/nginx:1.26 {\"nginx\":\"nginx:1.26\"}" -- \
		get deployment hub -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.template.metadata.annotations.imagegate\.dev/original-images}'
	expect_ok "kubectl patch of legacy's replicas (it predates the rewrite rules: nginx:1.25) is allowed" -- \
		patch deployment legacy -p '{"spec":{"replicas":2}}'
	kc get deployment legacy -o 'jsonpath={.spec.template.spec.containers[0].image}|{.spec.template.metadata.annotations}'
	if ((KC_RC == 0)) && [[ $KC_OUT == "nginx:1.25|" ]]; then
		pass "that UPDATE added no image, so legacy's template is not rewritten (no rollout) and has no annotation"
	else
		fail "that UPDATE added no image, so legacy's template is not rewritten" "$KC_OUT"
	fi

	# Already mirrored: nothing to do. kubectl debug: the ephemeral
	# container is rewritten too.
	expect_allowed "a pod with $hub/library/nginx:1.25 is created as written, with no rewrite" \
		'^pod/mirrored created$' "!$mw_warn" -- \
		run mirrored --image="$hub/library/nginx:1.25" --restart=Never
	expect_allowed "kubectl debug prom with busybox:1.36 is allowed, the image rewritten" \
		"^$mw_warn ephemeral container \"dbg\" image \"busybox:1\\.36\" to \"$hub/library/busybox:1\\.36\"" -- \
		debug prom --profile=general --image=busybox:1.36 --container=dbg
	expect_output "the ephemeral container runs the mirrored busybox" "$hub/library/busybox:1.36" -- \
		get pod prom -o 'jsonpath={.spec.ephemeralContainers[0].image}'

	# What no rule fixes is still refused, with the policy's reason about
	# the image the cluster would run.
	expect_refused "a pod from ghcr.io (no rewrite rule, not allowed) is refused by ImagePolicyWebhook" \
		'pods "ghcr" is forbidden' "$DENIED" "$(denied ghcr.io/acme/app:1.0 'is not allowed')" "!$mw_warn" -- \
		run ghcr --image=ghcr.io/acme/app:1.0 --restart=Never
	expect_refused "a Deployment from ghcr.io is refused by the validating webhook" \
		"$vw" "$(webhook_denied 'container "app"' ghcr.io/acme/app:1.0 'is not allowed')" -- \
		create deployment ghcr --image=ghcr.io/acme/app:1.0
	expect_refused "an untagged nginx is rewritten and still refused for latest, naming the mirrored image" \
		'pods "untagged" is forbidden' "$DENIED" "$(denied "$hub/library/nginx" latest)" -- \
		run untagged --image=nginx --restart=Never

	# Break-glass keeps the image as written: it is for when the mirror
	# cannot serve. The plugin admits and audits it as usual.
	expect_allowed "a break-glass pod keeps prometheus:2.6.1 and is told why" \
		'^Warning: imagegate did not rewrite images to the mirror: the pod asks for break-glass' '^pod/bg created$' -- \
		run bg --image=prometheus:2.6.1 --restart=Never --annotations=ops.image-policy.k8s.io/break-glass=true
	expect_output "the break-glass pod's image is as written" "prometheus:2.6.1" -- \
		get pod bg -o 'jsonpath={.spec.containers[0].image}'

	local m
	m=$(metric imagegate-mirror 'imagegate_image_rewrites_total{result="rewritten"}')
	if ((m >= 5)); then
		pass "imagegate_image_rewrites_total{result=\"rewritten\"} counts the rewrites ($m)"
	else
		fail "imagegate_image_rewrites_total{result=\"rewritten\"} counts the rewrites" "got $m, want at least 5"
	fi

	# failurePolicy: Ignore, and the policy still fails closed.
	stop imagegate-mirror
	expect_refused "imagegate down: prometheus:2.6.1 is refused all the same (ImagePolicyWebhook defaultAllow: false)" \
		'pods "down" is forbidden' 'connection refused' '!mutate\.imagegate\.dev' -- \
		run down --image=prometheus:2.6.1 --restart=Never
	expect_ok "the webhook configurations are deleted" -- \
		delete mutatingwebhookconfiguration,validatingwebhookconfiguration imagegate
	stop kube-apiserver-mw
}

# mirror_reviews ENDPOINT IMAGE OUTCOME: how many reviews imagegate-mirror
# logged on ENDPOINT (any when empty) whose images include IMAGE, with
# OUTCOME (any when empty).
mirror_reviews() {
	jq -nR --arg ep "$1" --arg img "$2" --arg out "$3" '[inputs | fromjson? |
		select(.msg == "review" and ($ep == "" or .endpoint == $ep) and (.images | index($img)) and ($out == "" or .outcome == $out))] | length' \
		"$LOGS/imagegate-mirror.log"
}

# expect_mutating_webhook_config PORT: the stored mutating webhook is the
# component's with only the client changed.
expect_mutating_webhook_config() {
	local desc="the stored mutating webhook calls https://127.0.0.1:$1/mutate with the e2e CA and keeps the component's failurePolicy Ignore, reinvocationPolicy IfNeeded, sideEffects None and the validating webhook's namespaceSelector and rules"
	local vwh
	vwh=$("$KUBECTL" get validatingwebhookconfiguration imagegate -o json 2>&1)
	kc get mutatingwebhookconfiguration imagegate -o json
	if ((KC_RC == 0)) && jq -e --arg url "https://127.0.0.1:$1/mutate" \
		--arg ca "$(base64 -w0 <"$WORK/pki/ca.crt")" --argjson v "$vwh" '
			(.webhooks | length) == 1 and (.webhooks[0] |
			.name == "mutate.imagegate.dev" and .clientConfig.url == $url and
			.clientConfig.caBundle == $ca and (.clientConfig | has("service") | not) and
			.failurePolicy == "Ignore" and .reinvocationPolicy == "IfNeeded" and .sideEffects == "None" and
			.timeoutSeconds == 5 and .namespaceSelector == $v.webhooks[0].namespaceSelector and
			.rules == $v.webhooks[0].rules)' \
		<<<"$KC_OUT" >/dev/null; then
		pass "$desc"
	else
		fail "$desc" "$KC_OUT"
	fi
}

# Issue 3 §4, the policy half: the policy file of a running imagegate is
# edited, and the next decision follows, with no restart. The main imagegate
# (the one this run's apiserver calls through ImagePolicyWebhook) is
# restarted once, with --config and no policy flags, and then keeps its PID
# through five changes of the file, each made the way something real makes
# it:
#   v1  the file as first written: registry.my.com and registry.other.com
#   v2  an editor writes a new file and renames it over the old one:
#       registry.other.com removed
#   v3  the file becomes a ConfigMap mount (policy.yaml -> ..data/policy.yaml,
#       ..data -> a timestamped directory), in one rename: a namespace rule
#       "locked" (requireDigest) added for this scenario's namespace
#   v4  the kubelet's update of that mount (a new timestamped directory, then
#       ..data renamed over): registry.other.com back
#   v4' the same update with a typo: refused, v4 keeps deciding
#   v5  the same update, fixed, and the namespace rule no longer requiring
#       digests
# Every check uses images no earlier check used, so the apiserver's
# decision cache never answers for imagegate. The validating webhook path is
# checked on the same apiserver, with a webhook configuration that sends it
# only Deployments in this scenario's namespace (pods there still go through
# ImagePolicyWebhook alone: the rules name deployments only).
RELOAD_RUNS=0
scenario_policy_reload() {
	say "scenario: the policy file changes under a running imagegate (editor rename, ConfigMap ..data swap, a broken file)"
	RELOAD_RUNS=$((RELOAD_RUNS + 1))
	local r=$RELOAD_RUNS dir=$WORK/policy-$RELOAD_RUNS ns=policy-reload-$RELOAD_RUNS
	local next=$WORK/policy-$RELOAD_RUNS.next/policy.yaml
	local other=registry.other.com pid starts failures h1 h2 h3 h4 h5
	local vw='admission webhook "reload\.imagegate\.dev" denied the request: '
	local not_other="registry registry\\.other\\.com is not allowed" locked='rule "locked" requires images pinned by digest'
	mkdir -p "$dir" "${next%/*}"
	# The namespace first: the policy's namespace rule and the webhook's
	# namespaceSelector name it.
	expect_ok "namespace $ns is created" -- create namespace "$ns"

	reload_policy_v1 >"$dir/policy.yaml"
	h1=$(policy_hash "$dir/policy.yaml")
	stop imagegate
	serve_imagegate imagegate IMAGEGATE_PORT \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		--config "$dir/policy.yaml" ||
		die "imagegate: its port $IMAGEGATE_PORT was taken while it was down"
	pid=${PIDS[imagegate]}
	starts=$(grep -c '"msg":"starting"' "$LOGS/imagegate.log")
	expect_metric "imagegate --config serves policy v1 ($h1)" imagegate "imagegate_policy_info{hash=\"$h1\"}" 1

	kc apply -f - <<-EOF
		apiVersion: admissionregistration.k8s.io/v1
		kind: ValidatingWebhookConfiguration
		metadata: {name: imagegate-reload-$r}
		webhooks:
		  - name: reload.imagegate.dev
		    clientConfig:
		      url: https://127.0.0.1:$IMAGEGATE_PORT/validate
		      caBundle: $(base64 -w0 <"$WORK/pki/ca.crt")
		    rules:
		      - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
		    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $ns}}
		    admissionReviewVersions: [v1]
		    sideEffects: None
		    failurePolicy: Fail
		    timeoutSeconds: 5
	EOF
	((KC_RC == 0)) || fail "a validating webhook for Deployments in $ns is registered" "$KC_OUT"
	await_kc "webhook reload.imagegate.dev is in force" "$vw" -- \
		create deployment probe -n "$ns" --image=nginx:1.25 --dry-run=server || return 0

	# v1.
	expect_created "v1: a pod from $other is created (ImagePolicyWebhook)" -- \
		run "r$r-v1" --image="$(fresh_image v1 "$other")" --restart=Never
	expect_audit "v1: the audit log holds policy-hash=$h1 for it" create "r$r-v1" -- \
		"imagepolicywebhook.image-policy.k8s.io/policy-hash=$h1" \
		imagepolicywebhook.image-policy.k8s.io/policy-rule=default
	expect_allowed "v1: a Deployment from $other in $ns passes the validating webhook" \
		'created \(server dry run\)' -- \
		create deployment "r$r-v1" -n "$ns" --image="$(fresh_image v1-vw "$other")" --dry-run=server

	# v2: an editor's save.
	reload_policy_v2 >"$dir/.policy.yaml.swp"
	h2=$(policy_hash "$dir/.policy.yaml.swp")
	mv "$dir/.policy.yaml.swp" "$dir/policy.yaml"
	await_policy "v2 (editor: new file renamed over the old)" "$h2" "$h1"
	expect_refused "v2: a pod from $other is refused with imagegate's reason" \
		"pods \"r$r-v2\" is forbidden" "$DENIED" "$(denied "$(fresh_image v2 "$other")" "$not_other")" -- \
		run "r$r-v2" --image="$(fresh_image v2 "$other")" --restart=Never
	expect_refused "v2: a Deployment from $other in $ns is refused by the validating webhook" \
		"$vw" "$(webhook_denied 'container "[^"]+"' "$(fresh_image v2-vw "$other")" "$not_other")" -- \
		create deployment "r$r-v2" -n "$ns" --image="$(fresh_image v2-vw "$other")" --dry-run=server
	expect_created "v2: a pod from $REGISTRY is still created" -- \
		run "r$r-v2-ok" --image="$(fresh_image v2-ok)" --restart=Never
	expect_audit "v2: the audit log holds policy-hash=$h2 for it" create "r$r-v2-ok" -- \
		"imagepolicywebhook.image-policy.k8s.io/policy-hash=$h2"

	# v3: the file becomes a ConfigMap mount, as the kubelet lays it out.
	reload_policy_v3 "$ns" >"$next"
	h3=$(policy_hash "$next")
	kubelet_update "$dir" "$next"
	await_policy "v3 (the file replaced by a ConfigMap-style ..data symlink)" "$h3" "$h2"
	expect_refused "v3: a tagged $REGISTRY pod in $ns is refused by the new namespace rule" \
		"pods \"r$r-v3\" is forbidden" "$DENIED" "$(denied "$(fresh_image v3)" "$locked")" -- \
		run "r$r-v3" -n "$ns" --image="$(fresh_image v3)" --restart=Never
	expect_audit "v3: the audit log holds policy-hash=$h3 and policy-rule=locked for that refusal" \
		create "r$r-v3" -- "imagepolicywebhook.image-policy.k8s.io/policy-hash=$h3" \
		imagepolicywebhook.image-policy.k8s.io/policy-rule=locked
	expect_refused "v3: a tagged $REGISTRY Deployment in $ns is refused by the validating webhook" \
		"$vw" "$(webhook_denied 'container "[^"]+"' "$(fresh_image v3-vw)" "$locked")" -- \
		create deployment "r$r-v3" -n "$ns" --image="$(fresh_image v3-vw)" --dry-run=server
	expect_created "v3: the same kind of pod in namespace default is created" -- \
		run "r$r-v3-default" --image="$(fresh_image v3-default)" --restart=Never

	# v4: the kubelet updates the mount.
	reload_policy_v4 "$ns" >"$next"
	h4=$(policy_hash "$next")
	kubelet_update "$dir" "$next"
	await_policy "v4 (kubelet: new timestamped directory, ..data renamed over)" "$h4" "$h3"
	expect_created "v4: a pod from $other is created again" -- \
		run "r$r-v4" --image="$(fresh_image v4 "$other")" --restart=Never
	expect_audit "v4: the audit log holds policy-hash=$h4 for it" create "r$r-v4" -- \
		"imagepolicywebhook.image-policy.k8s.io/policy-hash=$h4"

	# v4': a broken update changes nothing.
	failures=$(metric imagegate imagegate_policy_reload_failures_total)
	reload_policy_v4 "$ns" | sed 's/allowedRegistries:/allowedRegistry:/' >"$next"
	kubelet_update "$dir" "$next"
	await_metric "the broken update is counted as a failed reload" imagegate \
		imagegate_policy_reload_failures_total $((failures + 1))
	expect_metric "after the broken update, imagegate_policy_last_reload_successful is 0" imagegate \
		imagegate_policy_last_reload_successful 0
	expect_log "imagegate logged why, naming the field, and that policy $h4 keeps serving" imagegate \
		'.msg == "policy reload failed; the last good policy keeps serving" and .policy == "'"$h4"'"
		and (.err | test("unknown field \"allowedRegistry\""))'
	expect_metric "after the broken update, the policy in force is still v4" imagegate \
		"imagegate_policy_info{hash=\"$h4\"}" 1
	expect_curl "after the broken update, imagegate's /readyz is still ok" ok \
		--cacert "$WORK/pki/ca.crt" "https://127.0.0.1:$IMAGEGATE_PORT/readyz"
	expect_created "after the broken update, a pod from $other is still created (v4 decides)" -- \
		run "r$r-broken" --image="$(fresh_image broken "$other")" --restart=Never
	expect_audit "after the broken update, the audit log still holds policy-hash=$h4" create "r$r-broken" -- \
		"imagepolicywebhook.image-policy.k8s.io/policy-hash=$h4"
	expect_refused "after the broken update, a tagged pod in $ns is still refused by rule locked" \
		"pods \"r$r-broken-ns\" is forbidden" "$DENIED" "$(denied "$(fresh_image broken-ns)" "$locked")" -- \
		run "r$r-broken-ns" -n "$ns" --image="$(fresh_image broken-ns)" --restart=Never

	# v5: fixed, and the namespace rule relaxed.
	reload_policy_v4 "$ns" | sed 's/requireDigest: true/requireDigest: false/' >"$next"
	h5=$(policy_hash "$next")
	kubelet_update "$dir" "$next"
	await_policy "v5 (kubelet update, fixed, rule locked no longer requires digests)" "$h5" "$h4"
	expect_metric "after the fixed update, imagegate_policy_last_reload_successful is 1 again" imagegate \
		imagegate_policy_last_reload_successful 1
	expect_created "v5: a tagged $REGISTRY pod in $ns is created" -- \
		run "r$r-v5" -n "$ns" --image="$(fresh_image v5)" --restart=Never
	expect_audit "v5: the audit log holds policy-hash=$h5 and policy-rule=locked for it" create "r$r-v5" -- \
		"imagepolicywebhook.image-policy.k8s.io/policy-hash=$h5" \
		imagepolicywebhook.image-policy.k8s.io/policy-rule=locked

	# SIGHUP reloads too: the same policy, so nothing is swapped.
	local reloads
	reloads=$(metric imagegate imagegate_policy_reloads_total)
	kill -HUP "$pid"
	await_metric "SIGHUP makes imagegate reload the file" imagegate imagegate_policy_reloads_total $((reloads + 1))
	expect_log "imagegate logged the SIGHUP reload: the policy is unchanged ($h5)" imagegate \
		'.trigger == "SIGHUP" and .msg == "policy file changed, policy unchanged" and .policy == "'"$h5"'"'

	if [[ ${PIDS[imagegate]-} == "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
		(($(grep -c '"msg":"starting"' "$LOGS/imagegate.log") == starts)); then
		pass "imagegate kept PID $pid through the five changes and the SIGHUP (no restart)"
	else
		fail "imagegate kept PID $pid through the five changes and the SIGHUP (no restart)" \
			"now ${PIDS[imagegate]-none}; alive: $(kill -0 "$pid" 2>/dev/null && echo yes || echo no)"
	fi

	expect_ok "the webhook configuration is deleted" -- delete validatingwebhookconfiguration "imagegate-reload-$r"
	stop imagegate
	start_imagegate || die "imagegate: its port $IMAGEGATE_PORT was taken while it was down"
}

# The policy_reload scenario's policy versions (see there), on stdout.
reload_policy_v1() {
	cat <<-EOF
		# policy_reload v1
		apiVersion: imagegate.dev/v1alpha1
		kind: ImagePolicy
		default:
		  allowedRegistries: [$REGISTRY, registry.other.com]
	EOF
}
reload_policy_v2() {
	cat <<-EOF
		# policy_reload v2: registry.other.com removed
		apiVersion: imagegate.dev/v1alpha1
		kind: ImagePolicy
		default:
		  allowedRegistries: [$REGISTRY]
	EOF
}
# reload_policy_v3 NAMESPACE, reload_policy_v4 NAMESPACE
reload_policy_v3() {
	reload_policy_v2
	cat <<-EOF
		rules:
		  - name: locked
		    namespaces: [$1]
		    requireDigest: true
	EOF
}
reload_policy_v4() {
	reload_policy_v3 "$1" | sed "s|\[$REGISTRY\]|[$REGISTRY, registry.other.com]|"
}

# kubelet_update DIR FILE...: update the ConfigMap or Secret volume in DIR as
# the kubelet does, to hold the FILEs (by their base names): copy them into
# a new timestamped directory, point ..data_tmp at it, rename that over
# ..data (the one atomic step), then remove the old directory. The first
# update of DIR also makes each FILE's name in DIR a symlink through ..data,
# renamed over the plain file of that name if there is one.
KUBELET_UPDATES=0
kubelet_update() {
	local dir=$1 new old f
	shift
	KUBELET_UPDATES=$((KUBELET_UPDATES + 1))
	new=..$(date -u +%Y_%m_%d_%H_%M_%S).$(printf '%09d' "$KUBELET_UPDATES")
	old=$(readlink "$dir/..data" || true)
	mkdir "$dir/$new"
	cp "$@" "$dir/$new/"
	ln -s "$new" "$dir/..data_tmp"
	mv -T "$dir/..data_tmp" "$dir/..data"
	if [[ -n $old ]]; then
		rm -rf "${dir:?}/$old"
		return 0
	fi
	for f in "$@"; do
		f=${f##*/}
		ln -s "..data/$f" "$dir/.$f.link"
		mv -T "$dir/.$f.link" "$dir/$f"
	done
}

# policy_hash FILE: the hash imagegate gives the policy in FILE, from
# imagegate check --explain (computed by the same code, without a server).
policy_hash() {
	"$IMAGEGATE" check --config "$1" --explain "$REGISTRY/x:1" 2>/dev/null |
		sed -nE 's/.* in policy ([0-9a-f]+)$/\1/p' | grep . || die "imagegate check --config $1 gave no policy hash"
}

# await_policy DESCRIPTION HASH PREVIOUS: imagegate takes the new policy HASH
# (its imagegate_policy_info) within 10 s of the write, and logs "policy
# reloaded" from PREVIOUS to it. Prints how long the change took to apply.
await_policy() {
	local desc=$1 hash=$2 prev=$3 start=$EPOCHREALTIME
	while [[ $(metric imagegate "imagegate_policy_info{hash=\"$hash\"}") != 1 ]]; do
		if (($(elapsed_ms "$start") > 10000)); then
			fail "policy $desc is in force within 10s" "imagegate_policy_info: $(curl -fsS "http://127.0.0.1:$(metrics_port imagegate)/metrics" | grep policy_info)"
			return 0
		fi
		sleep 0.05
	done
	pass "policy $desc is in force $(elapsed_ms "$start") ms after the write: hash $hash"
	expect_log "imagegate logged: policy reloaded $prev -> $hash" imagegate \
		'.msg == "policy reloaded" and .policy == "'"$hash"'" and .previous == "'"$prev"'"'
}

# elapsed_ms START: milliseconds since START (an $EPOCHREALTIME).
elapsed_ms() {
	local now=$EPOCHREALTIME
	echo $(((${now/./} - ${1/./}) / 1000))
}

# expect_metric DESCRIPTION NAME SERIES WANT: imagegate NAME's metric SERIES
# is WANT.
expect_metric() {
	local got
	got=$(metric "$2" "$3")
	if [[ $got == "$4" ]]; then pass "$1"; else fail "$1" "$3 is $got, want $4"; fi
}

# await_metric DESCRIPTION NAME SERIES MIN: imagegate NAME's metric SERIES
# reaches MIN (an integer) within 10 s.
await_metric() {
	local got start=$SECONDS
	while :; do
		got=$(metric "$2" "$3")
		if ((${got%.*} >= $4)); then
			pass "$1"
			return 0
		fi
		if ((SECONDS - start >= 10)); then
			fail "$1" "$3 is $got after 10s, want at least $4"
			return 0
		fi
		sleep 0.1
	done
}

# expect_log DESCRIPTION NAME JQ-CONDITION: imagegate NAME has logged, since
# its latest start, a line meeting JQ-CONDITION (shown when found).
expect_log() {
	local line
	line=$(log_since_start "$2" | jq -cR "fromjson? | select($3)" | tail -n 1)
	if [[ -n $line ]]; then
		pass "$1"
		printf '%s\n' "$line" | indent
	else
		fail "$1" "no line of $2's log meets: $3"
	fi
}

# Issue 3 §4, the certificate half: imagegate's serving certificate is
# replaced in place while pods keep being created through the apiserver,
# and no review fails. The apiserver's imagegate is restarted once with its
# certificate and key in a Secret-style volume (tls.crt and tls.key are
# symlinks through ..data), then, with one PID throughout, the volume is
# updated the kubelet's way (what a cert-manager renewal of the mounted
# Secret comes to) three times: to a new leaf from the same CA (gen2), to a
# broken one (gen3: a new certificate with gen2's key, which does not match
# it), and to another good one (gen4).
#
# Two streams run meanwhile, each request with an image no other used (so
# the apiserver's decision cache never answers), alternately one imagegate
# allows and one it denies:
#   - pod creations through the apiserver (server-side dry run: admission
#     runs, nothing is stored), one at a time. The apiserver keeps its one
#     keep-alive connection to imagegate (seen with ss), opened before the
#     rotation, so these show that a rotation disturbs no connection in
#     use; they cannot show a new handshake.
#   - ImageReviews posted straight to imagegate by curl, one new TLS
#     connection each, verified against the e2e CA: these show that every
#     handshake during the rotation gets a certificate the caller trusts,
#     and which one it got.
# Every request must get imagegate's own decision: a backend error (which
# defaultAllow: false turns into a refusal without imagegate's reason) or a
# failed handshake counts as a failure.
ROTATION_RUNS=0
BG_PIDS=()
scenario_cert_rotation() {
	say "scenario: the serving certificate rotated in place (kubelet Secret update) under a stream of pod creations"
	ROTATION_RUNS=$((ROTATION_RUNS + 1))
	local dir=$WORK/serving-$ROTATION_RUNS gen=$WORK/rotation-$ROTATION_RUNS
	local out=$WORK/rotation-$ROTATION_RUNS/results stop=$WORK/rotation-$ROTATION_RUNS/stop
	local pid reviews0 handshakes0 failures0 t_first t_last load_pids g n
	mkdir -p "$dir" "$gen" "$out"
	for g in gen1 gen2 gen3 gen4; do make_leaf "$gen/$g" "imagegate-$g"; done
	# gen3: a renewal whose key did not come along.
	cp "$gen/gen2/tls.key" "$gen/gen3/tls.key"

	kubelet_update "$dir" "$gen/gen1/tls.crt" "$gen/gen1/tls.key"
	stop imagegate
	serve_imagegate imagegate IMAGEGATE_PORT \
		--tls-cert-file "$dir/tls.crt" --tls-key-file "$dir/tls.key" "${FLAG_POLICY[@]}" ||
		die "imagegate: its port $IMAGEGATE_PORT was taken while it was down"
	pid=${PIDS[imagegate]}
	expect_served "imagegate serves gen1 from the Secret-style volume" "$gen/gen1/tls.crt"

	reviews0=$(image_policy_reviews)
	handshakes0=$(metric imagegate imagegate_tls_handshake_failures_total)
	failures0=$(metric imagegate 'imagegate_certificate_reload_failures_total{certificate="serving"}')
	rm -f "$stop"
	: >"$out/apiserver"
	: >"$out/direct"
	rotation_load_apiserver "$out/apiserver" "$stop" &
	BG_PIDS+=($!)
	load_pids=($!)
	rotation_load_direct "$out/direct" "$stop" &
	BG_PIDS+=($!)
	load_pids+=($!)
	await_results "before the rotation" "$out" 20

	# gen2: a good renewal.
	t_first=$EPOCHREALTIME
	kubelet_update "$dir" "$gen/gen2/tls.crt" "$gen/gen2/tls.key"
	mark "$out" "gen2 written"
	await_served "after the kubelet update to gen2, new connections get gen2" "$gen/gen2/tls.crt"
	mark "$out" "gen2 served"
	await_results "with gen2" "$out" 20

	# gen3: broken, gen2 stays.
	kubelet_update "$dir" "$gen/gen3/tls.crt" "$gen/gen3/tls.key"
	mark "$out" "gen3 (broken) written"
	await_metric "the broken gen3 is counted as a failed certificate reload" imagegate \
		'imagegate_certificate_reload_failures_total{certificate="serving"}' $((failures0 + 1))
	expect_log "imagegate logged why gen3 is not used and that it keeps the previous certificate" imagegate \
		'.msg == "new serving certificate is not usable; keeping the previous one" and (.err | test("private key does not match"))'
	expect_served "after the broken update, new connections still get gen2" "$gen/gen2/tls.crt"
	await_results "with gen3 refused" "$out" 20

	# gen4: good again.
	kubelet_update "$dir" "$gen/gen4/tls.crt" "$gen/gen4/tls.key"
	mark "$out" "gen4 written"
	await_served "after the kubelet update to gen4, new connections get gen4" "$gen/gen4/tls.crt"
	mark "$out" "gen4 served"
	t_last=$EPOCHREALTIME
	await_results "with gen4" "$out" 20
	touch "$stop"
	wait "${load_pids[@]}"

	rotation_report "$out" "$t_first" "$t_last" "$gen"
	n=$(($(image_policy_reviews) - reviews0))
	local sent=$(($(wc -l <"$out/apiserver") + $(wc -l <"$out/direct")))
	if ((n == sent)); then
		pass "imagegate answered exactly one review per request ($n): the apiserver retried none"
	else
		fail "imagegate answered exactly one review per request" "imagegate counted $n reviews for $sent requests"
	fi
	expect_metric "no TLS handshake with imagegate failed during the rotation" imagegate \
		imagegate_tls_handshake_failures_total "$handshakes0"
	if [[ ${PIDS[imagegate]-} == "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		pass "imagegate kept PID $pid through the rotation (no restart)"
	else
		fail "imagegate kept PID $pid through the rotation (no restart)" "now ${PIDS[imagegate]-none}"
	fi

	stop imagegate
	start_imagegate || die "imagegate: its port $IMAGEGATE_PORT was taken while it was down"
}

# make_leaf DIR CN: DIR/tls.crt and DIR/tls.key, a serving certificate for
# 127.0.0.1 from the e2e CA (an ECDSA P-256 key: quick to make).
make_leaf() {
	mkdir -p "$1"
	(
		cd "$WORK/pki"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/tls.key" -out "$1/tls.csr" -subj "/CN=$2"
		openssl x509 -req -in "$1/tls.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
			-days 1 -extfile serving.ext -out "$1/tls.crt"
	) >>"$LOGS/openssl.log" 2>&1 || die "openssl failed: $(tail -n 5 "$LOGS/openssl.log")"
}

# cert_id CERT-FILE, or on stdin: its serial, subject and SHA-256
# fingerprint, on one line.
cert_id() {
	openssl x509 -noout -serial -subject -fingerprint -sha256 ${1:+-in "$1"} 2>/dev/null | paste -sd ' '
}

# served_cert_id: cert_id of the certificate imagegate serves to a new
# connection, verified against the e2e CA; empty when the handshake fails.
served_cert_id() {
	openssl s_client -connect "127.0.0.1:$IMAGEGATE_PORT" -CAfile "$WORK/pki/ca.crt" \
		-verify_return_error </dev/null 2>/dev/null | cert_id
}

# expect_served DESCRIPTION CERT-FILE: a new connection gets CERT-FILE.
# await_served: the same, waiting up to 10 s.
expect_served() { served_check 0 "$@"; }
await_served() { served_check 10 "$@"; }
served_check() {
	local timeout=$1 desc=$2 want got start=$EPOCHREALTIME
	want=$(cert_id "$3")
	while got=$(served_cert_id) && [[ $got != "$want" ]] && (($(elapsed_ms "$start") < timeout * 1000)); do
		sleep 0.05
	done
	if [[ $got == "$want" ]]; then
		if ((timeout > 0)); then desc+=" after $(elapsed_ms "$start") ms"; fi
		pass "$desc"
		printf '%s\n' "$got" | indent
	else
		fail "$desc" "want: $want"$'\n'"got:  ${got:-(no certificate: the handshake failed)}"
	fi
}

# image_policy_reviews: ImageReviews imagegate has answered, every decision.
image_policy_reviews() {
	curl -fsS "http://127.0.0.1:$(metrics_port imagegate)/metrics" |
		awk '/^imagegate_reviews_total\{.*endpoint="image-policy"/ { n += $2 } END { print n + 0 }'
}

# mark DIR TEXT: note in DIR/marks when TEXT happened, for rotation_report.
mark() { printf '%s %s\n' "$EPOCHREALTIME" "$2" >>"$1/marks"; }

# await_results DESCRIPTION DIR N: both streams log N more results in DIR,
# so that each phase of the rotation really had requests in flight. Gives up
# (failing) after 60 s.
await_results() {
	local desc=$1 dir=$2 n=$3 a0 d0 start=$SECONDS
	a0=$(wc -l <"$dir/apiserver")
	d0=$(wc -l <"$dir/direct")
	while (($(wc -l <"$dir/apiserver") < a0 + n)) || (($(wc -l <"$dir/direct") < d0 + n)); do
		if ((SECONDS - start >= 60)); then
			fail "$n more requests of each stream $desc within 60s" \
				"apiserver: $(wc -l <"$dir/apiserver") direct: $(wc -l <"$dir/direct")"
			return 0
		fi
		sleep 0.1
	done
}

# rotation_load_apiserver OUT STOP: until file STOP exists, create pods in
# default through the apiserver with curl (server-side dry run), one at a
# time, alternately with an image imagegate allows and one it denies, each
# image new. One line per request to OUT: "TIME N want got DETAIL", got
# being allowed, denied (with imagegate's reason) or FAILED.
rotation_load_apiserver() {
	local out=$1 stop=$2 i=0 image want got res code msg
	while [[ ! -e $stop ]]; do
		i=$((i + 1))
		if ((i % 2)); then
			want=allowed image=$REGISTRY/e2e-$RUN_ID-rot-$i:1.0
		else
			want=denied image=e2e-$RUN_ID-rot-$i:1.0
		fi
		res=$(curl -sS --max-time 60 --cacert "$WORK/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
			-H 'Content-Type: application/json' -w '\n%{http_code}' \
			--data-binary '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"rot-'"$i"'"},"spec":{"containers":[{"name":"c","image":"'"$image"'"}]}}' \
			"https://127.0.0.1:$APISERVER_PORT/api/v1/namespaces/default/pods?dryRun=All" 2>&1) || true
		code=${res##*$'\n'} msg=${res%$'\n'*}
		got=FAILED
		if [[ $want == allowed && $code == 201 ]]; then
			got=allowed msg=
		elif [[ $code == 403 && $msg == *"${DENIED}image \\\"$image\\\": registry docker.io is not allowed"* ]]; then
			got=denied msg=
		fi
		printf '%s %d %s %s %s\n' "$EPOCHREALTIME" "$i" "$want" "$got" "${msg//$'\n'/ }" >>"$out"
	done
}

# rotation_load_direct OUT STOP: the same, as ImageReviews posted straight
# to imagegate, a new curl (so a new TLS connection, verified against the
# e2e CA) each; DETAIL is the subject of the certificate it was served.
rotation_load_direct() {
	local out=$1 stop=$2 i=0 image want got res subject
	while [[ ! -e $stop ]]; do
		i=$((i + 1))
		if ((i % 2)); then
			want=allowed image=$REGISTRY/e2e-$RUN_ID-rot-direct-$i:1.0
		else
			want=denied image=e2e-$RUN_ID-rot-direct-$i:1.0
		fi
		res=$(curl -sS -v --max-time 60 --cacert "$WORK/pki/ca.crt" -H 'Content-Type: application/json' \
			--data-binary '{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"'"$image"'"}],"namespace":"default"}}' \
			"https://127.0.0.1:$IMAGEGATE_PORT/image-policy" 2>&1) || true
		subject=none
		[[ $res =~ subject:\ CN=([^[:space:],]+) ]] && subject=${BASH_REMATCH[1]}
		got=FAILED
		if [[ $want == allowed && $res == *'"allowed":true'* ]]; then
			got=allowed
		elif [[ $want == denied && $res == *'"allowed":false'* && $res == *'registry docker.io is not allowed'* ]]; then
			got=denied
		fi
		if [[ $got == FAILED ]]; then
			printf '%s %d %s %s %s\n' "$EPOCHREALTIME" "$i" "$want" "$got" "$subject $(grep -v '^[*>}{<]' <<<"$res" | tr '\n' ' ')" >>"$out"
		else
			printf '%s %d %s %s %s\n' "$EPOCHREALTIME" "$i" "$want" "$got" "$subject" >>"$out"
		fi
	done
}

# rotation_report DIR T-FIRST T-LAST GENDIR: the checks on both streams'
# results, and what went through during the rotation (from T-FIRST, the
# first update, to T-LAST, when the last certificate was served).
rotation_report() {
	local dir=$1 t0=$2 t1=$3 gen=$4 s total bad during
	say "rotation timeline: $(awk -v t0="$t0" '{ printf "%+.2fs %s; ", $1 - t0, substr($0, index($0, " ") + 1) }' "$dir/marks")"
	for s in apiserver direct; do
		total=$(wc -l <"$dir/$s")
		bad=$(awk '$4 == "FAILED"' "$dir/$s")
		during=$(awk -v t0="$t0" -v t1="$t1" '$1 >= t0 && $1 <= t1' "$dir/$s" | wc -l)
		local what="pod creations through the apiserver"
		[[ $s == direct ]] && what="ImageReviews straight to imagegate, each on a new TLS connection"
		say "$s: $total $what, $during of them during the rotation ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s); by outcome: $(awk '{ print $4 }' "$dir/$s" | sort | uniq -c | tr -s ' \n' ' ')"
		if [[ -z $bad ]] && ((during > 0)); then
			pass "every one of the $total $what got imagegate's decision (allowed or denied as expected), $during during the rotation"
		else
			fail "every one of the $total $what got imagegate's decision, some during the rotation" \
				"$during during the rotation; $(wc -l <<<"$bad") failed, the first ones:"$'\n'"$(head -n 5 <<<"$bad")"
		fi
	done
	# Which certificate each direct connection was served, in order of
	# completion: gen1, then gen2, then gen4; never gen3.
	local seen
	seen=$(awk '{ print $5 }' "$dir/direct" | uniq | paste -sd ' ')
	if [[ $seen =~ ^imagegate-gen1(\ imagegate-gen2)+(\ imagegate-gen4)+$ || $seen == "imagegate-gen1 imagegate-gen2 imagegate-gen4" ]]; then
		pass "the direct connections were served gen1, then gen2, then gen4, never the broken gen3: $(awk '{ print $5 }' "$dir/direct" | uniq -c | tr -s ' \n' ' ')"
	else
		fail "the direct connections were served gen1, then gen2, then gen4, never the broken gen3" "in order: $seen"
	fi
}

# expect_curl DESCRIPTION ok|refused CURL-ARGS...: curl gets a 2xx, or fails
# without any HTTP answer (status 000), which after a completed TCP connect
# means the TLS handshake refused it. How curl words that varies with the
# TLS version and timing (an alert, or a connection closed under it).
expect_curl() {
	local desc=$1 want=$2 out rc=0
	shift 2
	out=$(curl -fsS -w ' http_code=%{http_code}' "$@" 2>&1) || rc=$?
	if [[ $want == ok ]] && ((rc == 0)); then
		pass "$desc"
	elif [[ $want == refused ]] && ((rc != 0)) && [[ $out == *"http_code=000" ]]; then
		pass "$desc"
		printf '%s\n' "$out" | indent
	else
		fail "$desc" "curl $* (exit $rc), want $want:"$'\n'"$out"
	fi
}

# render_overlay VAR PORT [OVERLAY]: copy config/ and hack/e2e/OVERLAY/
# (default validating-overlay) into a new directory under $WORK, keeping
# their relative layout so the overlay's ../../../config resolves, fill in
# the webhooks' URL (imagegate on PORT) and the e2e CA in its *loopback.yaml
# patches, and set VAR to the overlay's directory.
render_overlay() {
	local dir name=${3:-validating-overlay} f
	dir=$(mktemp -d "$WORK/kustomize.XXXXXX")
	mkdir -p "$dir/hack/e2e"
	cp -R "$ROOT/config" "$dir/config"
	cp -R "$ROOT/hack/e2e/$name" "$dir/hack/e2e/"
	for f in "$dir/hack/e2e/$name/"*loopback.yaml; do
		subst "$f" E2E_IMAGEGATE_PORT "$2"
		subst "$f" E2E_CA_BUNDLE "$(base64 -w0 <"$WORK/pki/ca.crt")"
	done
	printf -v "$1" '%s' "$dir/hack/e2e/$name"
}

# expect_webhook_config PORT: the stored webhook configuration is config/'s
# with only the client changed: one webhook, calling imagegate on PORT, with
# the e2e CA and no Service.
expect_webhook_config() {
	local desc="the stored webhook calls https://127.0.0.1:$1/validate with the e2e CA, no Service, and keeps config/'s failurePolicy, timeout and namespaceSelector"
	kc get validatingwebhookconfiguration imagegate -o json
	if ((KC_RC == 0)) && jq -e --arg url "https://127.0.0.1:$1/validate" \
		--arg ca "$(base64 -w0 <"$WORK/pki/ca.crt")" '
			(.webhooks | length) == 1 and (.webhooks[0] |
			.name == "validate.imagegate.dev" and .clientConfig.url == $url and
			.clientConfig.caBundle == $ca and (.clientConfig | has("service") | not) and
			.failurePolicy == "Fail" and .timeoutSeconds == 5 and
			.namespaceSelector.matchExpressions[0].values == ["imagegate", "kube-system"])' \
		<<<"$KC_OUT" >/dev/null; then
		pass "$desc"
	else
		fail "$desc" "$KC_OUT"
	fi
}

# expect_reviews DESCRIPTION WANT GOT: a count of imagegate's logged reviews.
expect_reviews() {
	if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1" "expected $2 reviews, imagegate logged $3"; fi
}

# await_kc DESCRIPTION REGEX -- KUBECTL-ARGS...: the apiserver learns of a
# webhook configuration change through an informer, a moment after the write.
# Rerun the command (a dry run) until its output matches REGEX; after 30 s,
# fail and return false.
await_kc() {
	local desc=$1 re=$2 start=$SECONDS
	shift 2
	[[ ${1-} == -- ]] && shift
	while :; do
		kc "$@"
		if grep -Eq -- "$re" <<<"$KC_OUT"; then
			say "$desc after $((SECONDS - start))s"
			return 0
		fi
		if ((SECONDS - start >= 30)); then
			fail "$desc: not within 30s" "kubectl $* (exit $KC_RC):"$'\n'"$KC_OUT"
			return 1
		fi
		sleep 0.2
	done
}

# ---------------------------------------------------------------------------

main() {
	local selected=("$@") s
	((${#selected[@]})) || selected=("${SCENARIOS[@]}")
	for s in "${selected[@]}"; do
		declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (have: ${SCENARIOS[*]})"
	done

	# From here on, any exit prints the summary line and cleans up.
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	local t=$SECONDS
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

	free_port ETCD_PORT
	free_port ETCD_PEER_PORT
	free_port APISERVER_PORT
	free_port IMAGEGATE_PORT
	make_certs

	# imagegate before the apiserver's configuration, which names its port:
	# a port found taken at the first start is replaced (on_free_ports).
	t=$SECONDS
	on_free_ports ETCD_PORT ETCD_PEER_PORT -- start_etcd
	on_free_ports IMAGEGATE_PORT -- start_imagegate
	write_apiserver_config
	on_free_ports APISERVER_PORT -- start_apiserver kube-apiserver APISERVER_PORT "$KUBECONFIG" \
		--enable-admission-plugins=ImagePolicyWebhook \
		--admission-control-config-file="$WORK/apiserver/admission-config.yaml" \
		--audit-policy-file="$WORK/apiserver/audit-policy.yaml" \
		--audit-log-path="$AUDIT_LOG"
	say "ports: etcd $ETCD_PORT/$ETCD_PEER_PORT, kube-apiserver $APISERVER_PORT, imagegate $IMAGEGATE_PORT"
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
