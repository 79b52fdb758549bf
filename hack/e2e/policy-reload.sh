# shellcheck shell=bash
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
	restart_imagegate --tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		--config "$dir/policy.yaml"
	pid=${PIDS[imagegate]}
	starts=$(grep -c '"msg":"starting"' "$LOGS/imagegate.log")
	expect_metric "imagegate --config serves policy v1 ($h1)" imagegate "imagegate_policy_info{hash=\"$h1\"}" 1

	register_webhook "imagegate-reload-$r" reload.imagegate.dev "{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}" "$ns"
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
	restart_imagegate
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
