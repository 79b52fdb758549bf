# shellcheck shell=bash
# Issue 15: pin where you can, require where you must. A registry on
# loopback (hack/registry: go-containerregistry's in-memory registry over
# HTTPS, its certificate from the run's CA) holds team/app:1.0, pushed by
# the program itself. An imagegate of its own runs with --pin-digests and
# --registry-ca-file (the run's CA) and a policy file that allows only that
# registry, with requireDigest in the namespace payments. On a
# kube-apiserver of its own (over this run's etcd under a fresh prefix),
# both webhooks are registered from config/ and its mutating-webhook
# component through hack/e2e/mutating-overlay/, as in mutating_webhook.
# While the registry is up, a Deployment of team/app:1.0 is stored pinned to
# the pushed digest, with the tag as written in imagegate.dev/original-images;
# once it is stopped, a new tag is stored unpinned with a warning that says
# why, and in payments refused by the validating webhook. Started again, it
# serves team/app:1.0 re-pushed, and imagegate audit --pin-digests of the
# cluster says the tag of the Deployments pinned before has moved.
DP_RUNS=0
scenario_digest_pinning() {
	say "scenario: --pin-digests against a loopback registry (own kube-apiserver, both webhooks from config/)"
	DP_RUNS=$((DP_RUNS + 1))
	# port, ig_port and reg_port are set and read by name (free_port,
	# on_free_ports, dp_start_registry).
	# shellcheck disable=SC2034
	local port ig_port reg_port overlay reg digest app out
	local dir=$WORK/digest-pinning-$DP_RUNS
	local -x KUBECONFIG=$WORK/kubeconfig-dp
	local vw='admission webhook "validate\.imagegate\.dev" denied the request: '
	local pinned='Warning: imagegate pinned container "app" image '
	local unpinned='Warning: imagegate did not pin container "app" image '
	mkdir -p "$dir"
	free_port port ig_port reg_port

	(cd "$ROOT" && go build -o "$WORK/registry" ./hack/registry) || die "go build ./hack/registry failed"
	make_cert "$WORK/pki/ca" serverAuth "$WORK/pki/registry" registry
	on_free_ports reg_port -- dp_start_registry
	reg=127.0.0.1:$reg_port
	app=$reg/team/app:1.0
	digest=$(dp_registry_digest)
	say "the registry serves $app at $digest"

	dp_policy "$reg" >"$dir/policy.yaml"
	on_free_ports ig_port -- serve_imagegate imagegate-pin ig_port \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		--config "$dir/policy.yaml" --pin-digests --registry-ca-file "$WORK/pki/ca.crt"
	out=$("$IMAGEGATE" check --config "$dir/policy.yaml" --pin-digests --registry-ca-file "$WORK/pki/ca.crt" "$app" 2>&1) || true
	if [[ $out == *"pinned to $app@$digest"* ]]; then
		pass "imagegate check --pin-digests, trusting the e2e CA, resolves $app to the pushed digest"
		printf '%s\n' "$out" | indent
	else
		fail "imagegate check --pin-digests resolves $app to $digest" "$out"
	fi

	on_free_ports port -- start_apiserver kube-apiserver-dp port "$KUBECONFIG" \
		--etcd-prefix="/registry-digest-pinning-$DP_RUNS"
	render_overlay overlay "$ig_port" mutating-overlay
	expect_allowed "kubectl apply -k of the e2e overlay creates both webhook configurations" \
		'^mutatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' -- \
		apply -k "$overlay"
	expect_ok "namespace payments (requireDigest: true) is created" -- create namespace payments
	await_kc "webhook validate.imagegate.dev is in force" "$vw" -- \
		create deployment probe -n payments --image=ghcr.io/acme/app:1.0 --dry-run=server || return 0
	# The first request mutate.imagegate.dev answers asks the registry; the
	# digest is cached from then on (--digest-cache-ttl, 5 minutes).
	await_kc "webhook mutate.imagegate.dev is in force" "@$digest\$" -- \
		create deployment probe --image="$app" --dry-run=server -o 'jsonpath={.spec.template.spec.containers[0].image}' || return 0

	# The issue's example: the tag as written, pinned to what the registry
	# serves, the original recorded.
	expect_allowed "kubectl create deployment app --image=$app is created, and kubectl says it was pinned" \
		"^$pinned\"$(dp_literal "$app")\" to \"$(dp_literal "$app@$digest")\" \\(rule \"default\" pins tags" \
		'^deployment\.apps/app created$' -- \
		create deployment app --image="$app"
	expect_output "the Deployment's pod template runs $app@$digest, the pushed digest" "$app@$digest" -- \
		get deployment app -o 'jsonpath={.spec.template.spec.containers[0].image}'
	expect_output "the pod template carries imagegate.dev/original-images with the tag as written" "{\"app\":\"$app\"}" -- \
		get deployment app -o 'jsonpath={.spec.template.metadata.annotations.imagegate\.dev/original-images}'
	kc get deployment app -o json
	jq '.spec.template | {metadata: {annotations: .metadata.annotations}, spec: {containers: [.spec.containers[] | {name, image}]}}' <<<"$KC_OUT" | indent
	expect_allowed "a Deployment already pinned ($app@$digest) is stored as written, with no warning" \
		'^deployment\.apps/written created$' '!Warning: imagegate' -- \
		create deployment written --image="$app@$digest"
	expect_output "its template keeps the image and has no annotation" "$app@$digest|" -- \
		get deployment written -o 'jsonpath={.spec.template.spec.containers[0].image}|{.spec.template.metadata.annotations}'
	expect_allowed "in payments (requireDigest: true) the same tag is pinned, and the validating webhook allows the pinned image" \
		"^$pinned\"$(dp_literal "$app")\" to \"$(dp_literal "$app@$digest")\" \\(rule \"payments\"" '^deployment\.apps/pay created$' -- \
		create deployment pay -n payments --image="$app"
	expect_metric "one registry lookup served every review of $app (imagegate_digest_lookups_total{result=\"pinned\"} is 1)" \
		imagegate-pin 'imagegate_digest_lookups_total{result="pinned"}' 1
	await_metric "and the others were cache hits (imagegate_digest_cache_hits_total)" \
		imagegate-pin imagegate_digest_cache_hits_total 2

	# The registry down: /mutate never refuses, the validating path does
	# where the rule requires a digest.
	stop imagegate-registry
	expect_allowed "registry down: a Deployment of $reg/team/app:2.0 is stored unpinned, and kubectl says why" \
		"^$unpinned\"$(dp_literal "$reg/team/app:2.0")\" to a digest, so it runs by tag: .*connection refused" \
		'^deployment\.apps/down created$' -- \
		create deployment down --image="$reg/team/app:2.0"
	expect_output "its pod template runs the tag as written" "$reg/team/app:2.0|" -- \
		get deployment down -o 'jsonpath={.spec.template.spec.containers[0].image}|'
	expect_refused "registry down: in payments a Deployment of $reg/team/app:3.0 is refused: the rule requires a digest, and /mutate's warning says why it was not pinned" \
		"^$unpinned\"$(dp_literal "$reg/team/app:3.0")\" to a digest, so it runs by tag: .*connection refused" \
		"$vw" "$(webhook_denied 'container "app"' "$reg/team/app:3.0" 'rule "payments" requires images pinned by digest')" -- \
		create deployment down -n payments --image="$reg/team/app:3.0"
	expect_log "imagegate logged why it did not pin $reg/team/app:3.0" imagegate-pin \
		".msg == \"image not pinned\" and .level == \"WARN\" and .image == \"$reg/team/app:3.0\""
	await_metric "the failed lookups are counted (imagegate_digest_lookups_total{result=\"error\"})" \
		imagegate-pin 'imagegate_digest_lookups_total{result="error"}' 2

	# The registry back, with team/app:1.0 pushed anew: the tag has moved
	# since the Deployments were admitted pinned to $digest.
	dp_start_registry || die "the registry did not start again on $reg"
	local moved
	moved=$(dp_registry_digest)
	local audit=("$IMAGEGATE" audit --config "$dir/policy.yaml" --pin-digests --registry-ca-file "$WORK/pki/ca.crt" --kubeconfig "$KUBECONFIG")
	local rc=0 missing=() re
	"${audit[@]}" >"$dir/audit.txt" 2>&1 || rc=$?
	for re in \
		"^default +Deployment/app +app +$(dp_literal "$app@$digest") +moved +$digest +$moved\$" \
		"^default +Deployment/written +app +$(dp_literal "$app@$digest") +moved +$digest +$moved\$" \
		"^payments +Deployment/pay +app +$(dp_literal "$app@$digest") +moved +$digest +$moved\$" \
		"^default +Deployment/down +app +$(dp_literal "$reg/team/app:2.0") +unresolved +- +" \
		"^imagegate +Deployment/imagegate +imagegate +ghcr\.io/imagegate/imagegate:.* +denied +" \
		"^1 finding\(s\) in 5 object\(s\) with 5 image\(s\), policy [0-9a-f]{16}; 4 tag\(s\) of pinning rules: 0 unpinned, 3 moved, 1 unresolved, 0 current\$"; do
		grep -Eq -- "$re" "$dir/audit.txt" || missing+=("$re")
	done
	# The one finding, and exit 1, is imagegate's own Deployment (from
	# config/, ghcr.io): moved tags are not findings.
	if [[ $moved != "$digest" ]] && ((rc == 1)) && ((${#missing[@]} == 0)); then
		pass "team/app:1.0 re-pushed ($moved): imagegate audit --pin-digests --kubeconfig says the three Deployments admitted at $digest hold a tag that has moved, and team/app:2.0 does not resolve"
		indent <"$dir/audit.txt"
	else
		fail "imagegate audit --pin-digests finds the moved tag" "exit $rc, want 1; did not match: ${missing[*]}"$'\n'"$(cat "$dir/audit.txt")"
	fi
	stop imagegate-registry

	expect_ok "the webhook configurations are deleted" -- \
		delete mutatingwebhookconfiguration,validatingwebhookconfiguration imagegate
	stop imagegate-pin
	stop kube-apiserver-dp
}

# dp_start_registry: hack/registry on reg_port with the run's registry
# certificate, pushing team/app:1.0. Named under imagegate so that the
# harness's cleanup (stop_all imagegate) stops it if the run aborts; it
# exits on its own after 10 minutes besides. Returns 2 when its port was
# taken (see on_free_ports).
dp_start_registry() {
	start imagegate-registry "$WORK/registry" -listen "127.0.0.1:$reg_port" -lifetime 10m \
		-tls-cert-file "$WORK/pki/registry.crt" -tls-key-file "$WORK/pki/registry.key" \
		-ca-file "$WORK/pki/ca.crt" -push team/app:1.0
	wait_for "registry: team/app:1.0 pushed" 30 "${PIDS[imagegate-registry]}" dp_registry_digest || {
		stop imagegate-registry
		return 2
	}
}

# dp_registry_digest: the digest the registry logged for its push, since its
# latest start; fails while it has not pushed.
dp_registry_digest() {
	log_since_start imagegate-registry | jq -rR 'fromjson? | select(.msg == "pushed") | .digest' | grep .
}

# dp_policy REGISTRY: scenario_digest_pinning's policy: REGISTRY only, and
# requireDigest in payments; pinning comes from --pin-digests.
dp_policy() {
	cat <<-EOF
		apiVersion: imagegate.dev/v1alpha1
		kind: ImagePolicy
		default:
		  allowedRegistries: [$1]
		  rejectLatest: true
		rules:
		  - name: payments
		    namespaces: [payments]
		    requireDigest: true
	EOF
}

# dp_literal TEXT: TEXT as a literal in an extended regex.
# shellcheck disable=SC2001 # as in denied()
dp_literal() { sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$1"; }
