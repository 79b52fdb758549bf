# shellcheck shell=bash
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

	restart_imagegate
	expect_created "imagegate restarted: a pod with a $REGISTRY image is created" -- \
		run up --image="$(fresh_image up)" --restart=Never
	expect_refused "imagegate restarted: a docker.io image is refused with imagegate's reason" \
		'pods "up-hub" is forbidden' "$DENIED" "$(denied "e2e-$RUN_ID-hub:1.0" 'is not allowed')" -- \
		run up-hub --image="e2e-$RUN_ID-hub:1.0" --restart=Never
}
