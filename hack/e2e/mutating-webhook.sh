# shellcheck shell=bash
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
	free_port port ig_port

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
	wire_image_policy_webhook "$cfg" "$ig_port"
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
	# shellcheck disable=SC2016 # $v is jq's
	expect_webhook mutating mutate "$ig_port" \
		"the stored mutating webhook calls https://127.0.0.1:$ig_port/mutate with the e2e CA and keeps the component's failurePolicy Ignore, reinvocationPolicy IfNeeded, sideEffects None and the validating webhook's namespaceSelector and rules" \
		'.failurePolicy == "Ignore" and .reinvocationPolicy == "IfNeeded" and .sideEffects == "None" and
		.namespaceSelector == $v.webhooks[0].namespaceSelector and .rules == $v.webhooks[0].rules' \
		--argjson v "$("$KUBECTL" get validatingwebhookconfiguration imagegate -o json 2>&1)"
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
