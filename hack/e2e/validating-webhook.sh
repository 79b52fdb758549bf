# shellcheck shell=bash
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
	# port is set and read by name (free_port, on_free_ports).
	# shellcheck disable=SC2034
	local port warn_port overlay n ns e2e=$ROOT/hack/e2e
	local -x KUBECONFIG=$WORK/kubeconfig-vw
	local AUDIT_LOG=$WORK/audit-vw-$VW_RUNS.log
	local vw='admission webhook "validate\.imagegate\.dev" denied the request: '
	local audit_policy=$WORK/apiserver/audit-policy-vw.yaml
	free_port port warn_port
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

# validate_reviews [JQ-CONDITION]: how many AdmissionReviews (POST /validate)
# the imagegate instances have logged so far, of those meeting the condition.
# Every review is logged (--log-level=debug) with its namespace, outcome and
# the images it judged, before the answer is sent.
validate_reviews() {
	cat "$LOGS"/imagegate*.log | jq -nR "[inputs | fromjson? |
		select(.msg == \"review\" and .endpoint == \"validate\") | select(${1:-true})] | length"
}

# expect_webhook_config PORT: the stored webhook configuration is config/'s
# with only the client changed: one webhook, calling imagegate on PORT, with
# the e2e CA and no Service.
expect_webhook_config() {
	expect_webhook validating validate "$1" \
		"the stored webhook calls https://127.0.0.1:$1/validate with the e2e CA, no Service, and keeps config/'s failurePolicy, timeout and namespaceSelector" \
		'.failurePolicy == "Fail" and .namespaceSelector.matchExpressions[0].values == ["imagegate", "kube-system"]'
}
