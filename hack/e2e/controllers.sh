# shellcheck shell=bash
# Issue 14 §2: ImagePolicyWebhook reviews every UPDATE of a pod (not of its
# status) with all its images, and an ImageReview says neither the operation
# nor who asks. With kube-controller-manager running (its Job, ReplicaSet and
# Deployment controllers) and the main imagegate serving a policy file, this
# shows on the real controllers:
#   (a) a policy tightening re-judges a running Job's pod: once the pod has
#       Succeeded (set through pods/NAME/status, which the plugin does not
#       review), the Job controller's removal of its job-tracking finalizer
#       is refused, so the Job cannot finish until the policy is loosened;
#   (b) a break-glass expiry passing breaks nothing: updates of the pod
#       admitted before it (a label, a finalizer added and removed) are
#       allowed, while a NEW pod with the passed expiry is refused by the
#       validating webhook (/validate knows a CREATE), which here covers pods
#       in one namespace only; ImagePolicyWebhook alone admits it, as
#       documented;
#   (c) a Deployment whose pods ImagePolicyWebhook refuses: the user sees
#       imagegate's reason in the ReplicaSet's FailedCreate event.
CONTROLLERS_RUNS=0
scenario_controllers() {
	say "scenario: kube-controller-manager's Job and ReplicaSet controllers against ImagePolicyWebhook (policy tightening, break-glass expiry, FailedCreate)"
	CONTROLLERS_RUNS=$((CONTROLLERS_RUNS + 1))
	local r=$CONTROLLERS_RUNS ns=controllers-$CONTROLLERS_RUNS bgns=controllers-bg-$CONTROLLERS_RUNS
	local dir=$WORK/controllers-$CONTROLLERS_RUNS other=registry.other.com
	local loose tight job=job-$CONTROLLERS_RUNS img pod start
	local tracking=batch.kubernetes.io/job-tracking not_other="registry registry\\.other\\.com is not allowed"
	mkdir -p "$dir"
	expect_ok "namespace $ns is created" -- create namespace "$ns"
	expect_ok "namespace $bgns is created" -- create namespace "$bgns"

	ctl_policy "$REGISTRY" "$other" >"$dir/policy.yaml"
	loose=$(policy_hash "$dir/policy.yaml")
	restart_imagegate --tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		--config "$dir/policy.yaml"
	expect_metric "imagegate --config serves the loose policy ($loose: $REGISTRY and $other)" imagegate \
		"imagegate_policy_info{hash=\"$loose\"}" 1
	start_controller_manager

	# (a) A Job across a policy tightening.
	img=$(fresh_image job "$other")
	expect_created "Job $job with an image from $other is created" -- create job "$job" -n "$ns" --image="$img"
	await_jsonpath "the Job controller creates the Job's pod" 60 '{.items[0].metadata.name}' -- \
		get pods -n "$ns" -l "batch.kubernetes.io/job-name=$job" || return 0
	pod=$AJ_OUT
	expect_output "the Job's pod $pod carries the $tracking finalizer" "$tracking" -- \
		get pod "$pod" -n "$ns" -o 'jsonpath={.metadata.finalizers}'

	ctl_policy "$REGISTRY" >"$dir/.policy.yaml.swp"
	tight=$(policy_hash "$dir/.policy.yaml.swp")
	mv "$dir/.policy.yaml.swp" "$dir/policy.yaml"
	await_policy "tightened ($other removed)" "$tight" "$loose"
	expect_ok "pod $pod is set Succeeded through its status subresource (not reviewed)" -- \
		patch pod "$pod" -n "$ns" --subresource=status --type=merge -p '{"status":{"phase":"Succeeded"}}'
	expect_controller_refused "the Job controller's finalizer removal on $pod is refused with imagegate's reason, and again on its retry" \
		"$pod" job-controller 2 "$(denied "$img" "$not_other")"
	kc get job "$job" -n "$ns" -o json
	if [[ $("$KUBECTL" get pod "$pod" -n "$ns" -o 'jsonpath={.metadata.finalizers}') == *"$tracking"* ]] &&
		((KC_RC == 0)) && jq -e '[.status.conditions[]? | select(.type == "Complete" and .status == "True")] | length == 0' <<<"$KC_OUT" >/dev/null; then
		pass "a policy tightening blocks the Job controller's finalizer removal on ImagePolicyWebhook (documented): $pod keeps $tracking and Job $job is not Complete"
	else
		fail "a policy tightening blocks the Job controller's finalizer removal on ImagePolicyWebhook (documented)" "$KC_OUT"
	fi

	ctl_policy "$REGISTRY" "$other" >"$dir/.policy.yaml.swp"
	mv "$dir/.policy.yaml.swp" "$dir/policy.yaml"
	await_policy "loosened again ($other back)" "$loose" "$tight"
	start=$SECONDS
	if await_jsonpath "Job $job completes" 180 '{.status.conditions[?(@.type=="Complete")].status}' -- \
		get job "$job" -n "$ns"; then
		expect_output "once loosened, Job $job is Complete with no one's help, $((SECONDS - start))s after the change: one pod succeeded" \
			"succeeded=1" -- get job "$job" -n "$ns" -o 'jsonpath=succeeded={.status.succeeded}'
		expect_output "and the Job controller removed its finalizer from $pod" "finalizers=." -- \
			get pod "$pod" -n "$ns" -o 'jsonpath=finalizers={.metadata.finalizers}.'
	fi

	# (b) A break-glass pod across its expiry. The validating webhook sees
	# pods in $bgns only; ImagePolicyWebhook sees every pod.
	ctl_breakglass "$bgns" "$ns"

	# (c) A Deployment whose pods ImagePolicyWebhook refuses.
	img=$(fresh_image web docker.io)
	expect_created "Deployment web-$r with a Docker Hub image is created (ImagePolicyWebhook reviews pods, not Deployments)" -- \
		create deployment "web-$r" -n "$ns" --image="$img"
	if await_jsonpath "the ReplicaSet records FailedCreate" 60 '{.items[0].message}' -- \
		get events -n "$ns" --field-selector "reason=FailedCreate,involvedObject.kind=ReplicaSet"; then
		if grep -Eq -- "is forbidden: $DENIED$(denied "$img" "registry docker\\.io is not allowed")" <<<"$AJ_OUT"; then
			pass "the ReplicaSet's FailedCreate event (kubectl get events --field-selector reason=FailedCreate) carries imagegate's reason"
			printf '%s\n' "$AJ_OUT" | indent
		else
			fail "the ReplicaSet's FailedCreate event carries imagegate's reason" "message: $AJ_OUT"
		fi
	fi

	stop kube-controller-manager
	restart_imagegate
}

# ctl_breakglass NAMESPACE OTHER-NAMESPACE: scenario_controllers (b), in
# NAMESPACE, which a validating webhook for pods covers; OTHER-NAMESPACE has
# ImagePolicyWebhook alone.
ctl_breakglass() {
	local ns=$1 plain=$2 r=$CONTROLLERS_RUNS img exp until bg=bg-$CONTROLLERS_RUNS
	local vw='admission webhook "controllers\.imagegate\.dev" denied the request: '
	local flag=ops.image-policy.k8s.io/break-glass=true expires=ops.image-policy.k8s.io/expires
	img=$(fresh_image bg docker.io)
	register_webhook "imagegate-controllers-$r" controllers.imagegate.dev "{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}" "$ns"
	((KC_RC == 0)) || fail "a validating webhook for pods in $ns is registered" "$KC_OUT"
	# The probe passes ImagePolicyWebhook (an expired break-glass) and only
	# the validating webhook refuses it.
	await_kc "webhook controllers.imagegate.dev is in force" "$vw" -- run probe -n "$ns" --image="$img" \
		--restart=Never --annotations="$flag" --annotations="$expires=2000-01-01T00:00:00Z" --dry-run=server || return 0

	until=$(($(date +%s) + 15))
	exp=$(date -u -d "@$until" +%Y-%m-%dT%H:%M:%SZ)
	expect_created "break-glass pod $bg ($img, expires $exp, within maxAge 1h) is created through both paths" -- \
		run "$bg" -n "$ns" --image="$img" --restart=Never --annotations="$flag" --annotations="$expires=$exp"
	while (($(date +%s) < until + 3)); do sleep 0.5; done
	say "break-glass of $bg expired at $exp; now $(date -u +%FT%TZ)"
	expect_ok "after its expiry, a label merge-patch of $bg is accepted" -- \
		patch pod "$bg" -n "$ns" --type=merge -p '{"metadata":{"labels":{"after-expiry":"yes"}}}'
	expect_audit "ImagePolicyWebhook judged that update as an honoured break-glass" patch "$bg" -- \
		imagepolicywebhook.image-policy.k8s.io/break-glass=true
	expect_ok "after its expiry, adding a finalizer to $bg is accepted" -- \
		patch pod "$bg" -n "$ns" --type=merge -p '{"metadata":{"finalizers":["e2e.imagegate.dev/hold"]}}'
	expect_ok "after its expiry, removing that finalizer is accepted" -- \
		patch pod "$bg" -n "$ns" --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]'
	expect_refused "a NEW pod with the same passed expiry is refused by the validating webhook (a CREATE)" \
		"$vw" "break-glass refused: break-glass expired at $exp" -- \
		run "$bg-new" -n "$ns" --image="$img" --restart=Never --annotations="$flag" --annotations="$expires=$exp" --dry-run=server
	expect_allowed "ImagePolicyWebhook alone admits that new pod in $plain: an ImageReview cannot tell it from an update (documented)" \
		'created \(server dry run\)' -- \
		run "$bg-new" -n "$plain" --image="$img" --restart=Never --annotations="$flag" --annotations="$expires=$exp" --dry-run=server
	expect_ok "the webhook configuration is deleted" -- delete validatingwebhookconfiguration "imagegate-controllers-$r"
}

# ctl_policy REGISTRY...: scenario_controllers' policy, allowing REGISTRYs,
# with break-glass bounded by a one-hour maxAge; on stdout.
ctl_policy() {
	local list
	list=$(printf '%s, ' "$@")
	list=${list%, }
	cat <<-EOF
		# controllers: $*
		apiVersion: imagegate.dev/v1alpha1
		kind: ImagePolicy
		default:
		  allowedRegistries: [$list]
		  rejectLatest: true
		  breakGlass: {enabled: true, maxAge: 1h}
	EOF
}

# await_jsonpath DESCRIPTION SECONDS JSONPATH -- KUBECTL-ARGS...: rerun
# kubectl ARGS -o jsonpath=JSONPATH until it prints something, and set
# AJ_OUT to that; after SECONDS, fail and return false.
await_jsonpath() {
	local desc=$1 timeout=$2 path=$3 start=$SECONDS
	shift 4
	while :; do
		AJ_OUT=$("$KUBECTL" --request-timeout=30s "$@" -o "jsonpath=$path" 2>/dev/null || true)
		if [[ -n $AJ_OUT ]]; then
			say "$desc after $((SECONDS - start))s"
			return 0
		fi
		if ((SECONDS - start >= timeout)); then
			fail "$desc within ${timeout}s" "kubectl $*:"$'\n'"$("$KUBECTL" "$@" 2>&1 | tail -n 5)"
			return 1
		fi
		sleep 0.5
	done
}

# expect_controller_refused DESCRIPTION POD CONTROLLER COUNT REGEX: within
# 60 s the audit log holds COUNT refused (403) writes of POD (not of its
# status) from kube-controller-manager's CONTROLLER (its user agent ends
# with the controller's name), whose message matches REGEX; shows the last.
expect_controller_refused() {
	local desc=$1 pod=$2 ctl=$3 count=$4 re=$5 start=$SECONDS events=
	while ((SECONDS - start < 60)); do
		events=$(jq -cR --arg pod "$pod" --arg ctl "/$ctl" '
			fromjson? | select(.objectRef.resource == "pods" and .objectRef.name == $pod
				and (.verb == "patch" or .verb == "update") and (.objectRef.subresource // "") == ""
				and .stage == "ResponseComplete" and .responseStatus.code == 403
				and (.userAgent | endswith($ctl)))
			| {verb, userAgent, code: .responseStatus.code, message: .responseStatus.message}' "$AUDIT_LOG" 2>/dev/null || true)
		(($(grep -c . <<<"$events") < count)) || break
		sleep 0.5
	done
	if (($(grep -c . <<<"$events") >= count)) && tail -n 1 <<<"$events" | jq -r .message | grep -Eq -- "$re"; then
		pass "$desc"
		tail -n 1 <<<"$events" | indent
	else
		fail "$desc" "refused writes of $pod by $ctl in the audit log (want $count matching $re):"$'\n'"$events"
	fi
}
