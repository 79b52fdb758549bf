# shellcheck shell=bash
# The e2e suite's library, sourced by hack/e2e.sh: output, processes, ports,
# files, checks (expect_*, await_*), readers of logs and metrics. No scenarios.

# ---------------------------------------------------------------------------
# Output and bookkeeping

PASSED=0
FAILED=0
T0=$SECONDS

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

# stop_all PREFIX: stop every running component whose name starts with PREFIX.
stop_all() {
	local name
	for name in "${!PIDS[@]}"; do
		[[ $name != "$1"* ]] || stop "$name"
	done
}

# ---------------------------------------------------------------------------
# Ports

# free_port VAR...: set each VAR to a loopback TCP port that no socket uses
# and that this run has not handed out yet.
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
		shift
		if (($#)); then free_port "$@"; fi
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
		free_port "${vars[@]}"
		say "$1: trying again on new ports ($(for v in "${vars[@]}"; do printf '%s=%s ' "$v" "${!v}"; done))"
	done
	die "$1: ports taken three times in a row"
}

# ---------------------------------------------------------------------------
# Files

# subst FILE OLD NEW: replace the literal text OLD by NEW in FILE, and fail when
# OLD is not there (the documented example changed: update this script).
subst() {
	local file=$1 old=$2 new=$3
	grep -qF -- "$old" "$file" || die "$file: expected to find '$old' (the file it was copied from changed?)"
	sed -i "s|$(sed_quote "$old")|$(sed_quote "$new")|g" "$file"
}
# sed_quote TEXT: TEXT with sed's special characters (for s|...|...|) escaped.
sed_quote() { sed 's/[][\\.*^$|&/]/\\&/g' <<<"$1"; }

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

# ---------------------------------------------------------------------------
# Checks. Each prints one PASS or FAIL line; on FAIL it shows what kubectl said.

# kc ARGS...: run the built kubectl; sets KC_OUT (stdout and stderr) and KC_RC.
kc() {
	KC_RC=0
	KC_OUT=$("$KUBECTL" --request-timeout=60s "$@" 2>&1) || KC_RC=$?
}

# register_webhook CONFIG NAME RULE NS: registers imagegate's /validate as
# the validating webhook NAME, in the configuration CONFIG, for RULE (one
# rules entry, in flow style) in namespace NS only, failing closed; KC_RC and
# KC_OUT say how kubectl fared.
register_webhook() {
	kc apply -f - <<-EOF
		apiVersion: admissionregistration.k8s.io/v1
		kind: ValidatingWebhookConfiguration
		metadata: {name: $1}
		webhooks:
		  - name: $2
		    clientConfig:
		      url: https://127.0.0.1:$IMAGEGATE_PORT/validate
		      caBundle: $(base64 -w0 <"$WORK/pki/ca.crt")
		    rules:
		      - $3
		    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $4}}
		    admissionReviewVersions: [v1]
		    sideEffects: None
		    failurePolicy: Fail
		    timeoutSeconds: 5
	EOF
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

# The start of every ImagePolicyWebhook refusal.
# shellcheck disable=SC2034 # used by the scenarios
DENIED='image policy webhook backend denied one or more images: '

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

# Image names unique to this run, for checks that must not be answered by the
# apiserver's decision cache.
# fresh_image NAME [REGISTRY]: from $REGISTRY unless REGISTRY is given.
fresh_image() { printf '%s/e2e-%s-%s:1.0' "${2:-$REGISTRY}" "$RUN_ID" "$1"; }

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
# imagegate's metrics and logs

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
