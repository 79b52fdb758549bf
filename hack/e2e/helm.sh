# shellcheck shell=bash
# Issue 16: the Helm chart config/helm/imagegate on the real apiserver.
#
# 1. Each values set of the matrix (the chart's defaults, with generated
#    certificates; the kustomize base; the base with each component's values
#    file, config/helm/render/*.yaml; and every option at once) is rendered
#    with `helm template` and applied with `kubectl apply --dry-run=server`:
#    the apiserver validates and admits every object without storing it.
#    With audit.enabled (the audit-report set, and every option at once) the
#    Report CRD (--include-crds) and the audit CronJob, whose policy flags,
#    policy volume, image and security context must be the Deployment's.
# 2. config/ with each kustomize component renders the same objects as the
#    chart with that component's values file (`kubectl kustomize` against
#    hack/render-config.sh --template, compared as JSON): the components'
#    hand-kept patches agree with the chart. So does config/ with
#    audit-report, mutating-webhook and policy-file, in that order, against
#    the chart with their three values files, and so does audit-report,
#    mutating-webhook and digest-pinning; in each the audit CronJob has the
#    Deployment's policy and registry flags and volumes: the components
#    patch the CronJob as they patch the Deployment. "everything" pins
#    digests with registry credentials and a CA, shared the same way.
# 3. A real install of the webhooks, as the kustomize scenarios
#    (validating_webhook, mutating_webhook) do with config/: the chart's
#    defaults with the mutating webhook on (config/helm/render/
#    mutating-webhook.yaml, whose mirrors go to the Deployment's arguments
#    only) are rendered, and its ValidatingWebhookConfiguration and
#    MutatingWebhookConfiguration are created as rendered (jq on their
#    JSON) but for each webhook's clientConfig: the Service becomes a URL
#    with the Service's path on imagegate-helm, run on loopback with the
#    Deployment's policy flags (no kubelet runs imagegate's pods), and the
#    caBundle this run's CA. The stored objects keep every field the chart
#    set. On this apiserver, which has ImagePolicyWebhook too, Deployments
#    from ghcr.io, or untagged once rewritten, are refused with imagegate's
#    reason; from registry.my.com, a Deployment and a pod are admitted as
#    written; Docker Hub images in a pod, a Deployment and kubectl debug's
#    ephemeral container are rewritten to the mirror, and only the mirrored
#    image is judged; the namespaces the chart's namespaceSelector exempts
#    (imagegate, kube-system) send imagegate-helm nothing. Then the
#    configurations are deleted, and awaited out of force, and the objects
#    made meanwhile too, so no later scenario meets them.
#
# cert-manager's and the Prometheus Operator's CRDs are not on the e2e
# apiserver. Minimal stand-ins are installed for the run (the real group,
# version, kind and scope, a schema that keeps any field), so those objects
# are server dry-run too: the apiserver checks their kind, names and
# namespace, not their spec.
scenario_helm() {
	say "scenario: the Helm chart, rendered per values set and dry-run on the apiserver"
	local helm chart=$ROOT/config/helm/imagegate render=$ROOT/hack/render-config.sh
	local dir=$WORK/helm set out n crds=$WORK/helm/crds.yaml
	mkdir -p "$dir"
	local t=$SECONDS
	helm=$("$ROOT/hack/install-helm.sh") || die "hack/install-helm.sh failed"
	say "helm ready in $((SECONDS - t))s: $helm"
	export HELM=$helm

	expect_ok_cmd "helm lint config/helm/imagegate passes" "$helm" lint "$chart"
	expect_ok_cmd "hack/render-config.sh --check: config/ is what the chart renders" "$render" --check
	expect_fail_cmd "a misspelt value (webhook.failurPolicy) is refused by values.schema.json" \
		"additional properties 'failurPolicy' not allowed" \
		"$helm" template imagegate "$chart" --set webhook.failurPolicy=Ignore
	expect_fail_cmd "pinning.enabled without the mutating webhook, which is what pins, is refused" \
		'pinning.enabled needs mutatingWebhook.enabled' \
		"$helm" template imagegate "$chart" --set pinning.enabled=true

	helm_crds >"$crds"
	expect_ok "the stand-in CRDs for cert-manager and the Prometheus Operator are created" -- apply -f "$crds"
	expect_ok "the CRDs are established" -- wait --for=condition=Established --timeout=30s -f "$crds"
	# A server dry run creates no namespace: create it for real, from the chart.
	"$render" --template base --show-only templates/namespace.yaml >"$dir/namespace.yaml"
	expect_ok "the chart's Namespace imagegate is applied" -- apply -f "$dir/namespace.yaml"

	# set NAME: a values set; its manifests in $dir/NAME.yaml.
	local sets=(defaults base mutating-webhook policy-file cert-manager client-auth hpa prometheus audit-report everything)
	for set in "${sets[@]}"; do
		out=$dir/$set.yaml
		case $set in
		defaults) "$helm" template imagegate "$chart" --namespace imagegate >"$out" ;;
		everything)
			"$render" --template policy-file -f "$ROOT/config/helm/render/mutating-webhook.yaml" \
				-f "$ROOT/config/helm/render/cert-manager.yaml" -f "$ROOT/config/helm/render/client-auth.yaml" \
				-f "$ROOT/config/helm/render/hpa.yaml" -f "$ROOT/config/helm/render/prometheus.yaml" \
				-f "$ROOT/config/helm/render/audit-report.yaml" --include-crds \
				--set-file clientAuth.caBundle="$WORK/pki/ca.crt" --set pinning.enabled=true \
				--set pinning.credentialsSecret=registry-credentials --set pinning.caConfigMap=registry-ca \
				--set pinning.timeout=1500ms --set pinning.reviewTimeout=4s --set pinning.cacheTTL=10m >"$out"
			;;
		*) "$render" --template "$set" >"$out" ;;
		esac || {
			fail "helm template of values set $set" "$(tail -n 5 "$out")"
			continue
		}
		n=$(grep -c '^kind: ' "$out")
		expect_dry_run "values set $set: all $n objects pass kubectl apply --dry-run=server" "$n" "$out"
	done
	expect_grep "defaults: the chart makes a CA and sets it as both webhooks' caBundle" \
		'^      caBundle: [A-Za-z0-9+/=]{100,}$' "$dir/defaults.yaml"
	expect_grep "client-auth: imagegate requires the apiserver's client certificate" \
		'--client-ca-file=/client-ca/ca.crt' "$dir/client-auth.yaml"
	expect_grep "everything: the ConfigMap imagegate-client-ca is made from clientAuth.caBundle" \
		'^  name: imagegate-client-ca$' "$dir/everything.yaml"
	expect_grep "everything: pinning.credentialsSecret's .dockerconfigjson is mounted whole as the config.json --registry-credentials names" \
		'--registry-credentials=/etc/imagegate-registry/credentials/config\.json' "$dir/everything.yaml"
	expect_grep "everything: imagegate's group may read the Secrets' files (fsGroup; the kubelet writes them as root, mode 0440)" \
		'^        fsGroup: 65532$' "$dir/everything.yaml"
	expect_grep "audit-report: the chart ships the Report CRD (helm template --include-crds)" \
		'^  name: reports\.openreports\.io$' "$dir/audit-report.yaml"
	expect_same_policy "$dir/audit-report.yaml"
	expect_same_policy "$dir/everything.yaml"

	local component
	expect_same_as_kustomize
	for component in mutating-webhook cert-manager policy-file client-auth hpa prometheus audit-report; do
		expect_same_as_kustomize "$component"
	done
	# digest-pinning needs mutating-webhook, and the chart says so.
	expect_same_as_kustomize mutating-webhook digest-pinning
	# The components that change the policy, listed after audit-report as
	# config/kustomization.yaml's comment says.
	expect_same_as_kustomize audit-report mutating-webhook policy-file
	expect_same_policy "$dir/kustomize-audit-report+mutating-webhook+policy-file.yaml"
	expect_same_policy "$dir/chart-audit-report+mutating-webhook+policy-file.yaml"
	expect_same_as_kustomize audit-report mutating-webhook digest-pinning
	expect_same_policy "$dir/kustomize-audit-report+mutating-webhook+digest-pinning.yaml"
	expect_same_policy "$dir/chart-audit-report+mutating-webhook+digest-pinning.yaml"
	expect_ok "the stand-in CRDs are deleted" -- delete -f "$crds"

	helm_install "$helm" "$chart" "$dir"
}

# helm_install HELM CHART DIR: scenario_helm's step 3, the chart's webhook
# configurations installed for real on this apiserver, calling imagegate-helm
# on loopback; removed again at the end, with the objects it made.
helm_install() {
	local helm=$1 chart=$2 dir=$3 objects policy exempt ns hooks=$3/webhooks.json
	# port is set and read by name (free_port, on_free_ports).
	# shellcheck disable=SC2034
	local port
	local probe=(create deployment helm-probe --image=nginx:1.25 --dry-run=server -o 'jsonpath={.spec.template.spec.containers[0].image}')
	local vw='admission webhook "validate\.imagegate\.dev" denied the request: '
	"$helm" template imagegate "$chart" --namespace imagegate \
		-f "$ROOT/config/helm/render/mutating-webhook.yaml" >"$dir/install.yaml" 2>&1 || {
		fail "helm template with config/helm/render/mutating-webhook.yaml" "$(tail -n 5 "$dir/install.yaml")"
		return 0
	}
	objects=$("$KUBECTL" create --dry-run=client -o json -f "$dir/install.yaml" 2>"$dir/install.err" |
		jq -cs '[.[] | if .kind == "List" then .items[] else . end]' 2>>"$dir/install.err") || {
		fail "kubectl create --dry-run=client -o json of the chart's rendering" "$(tail -n 5 "$dir/install.err")"
		return 0
	}

	# imagegate-helm judges with the chart Deployment's own policy flags
	# (registryMirrors too: the default values have none to rewrite with).
	mapfile -t policy < <(jq -r '.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].args[] |
		select(test("^--(registry-whitelist|mode|registry-mirror|config)="))' <<<"$objects")
	if [[ " ${policy[*]} " == *" --registry-mirror=docker.io=$REGISTRY/dockerhub"[,\ ]* ]]; then
		pass "the chart's Deployment, mutating webhook on, runs imagegate with ${policy[*]}"
	else
		fail "the chart's Deployment, mutating webhook on, rewrites docker.io to $REGISTRY/dockerhub" "its policy flags: ${policy[*]}"
		return 0
	fi
	free_port port
	on_free_ports port -- serve_imagegate imagegate-helm port \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" "${policy[@]}"

	# Both configurations as rendered, but for each webhook's clientConfig:
	# the chart's Service path on loopback instead of the Service (no kubelet
	# runs imagegate's pods), and this run's CA instead of the chart's.
	jq --arg base "https://127.0.0.1:$port" --arg ca "$(base64 -w0 <"$WORK/pki/ca.crt")" '
		{apiVersion: "v1", kind: "List", items: [.[] |
			select(.kind == "ValidatingWebhookConfiguration" or .kind == "MutatingWebhookConfiguration") |
			.webhooks |= map(.clientConfig |= {url: ($base + (.service.path // error("no clientConfig.service.path"))), caBundle: $ca})]}' \
		<<<"$objects" >"$hooks" 2>&1 || {
		fail "jq: the chart's webhook configurations pointed at imagegate-helm" "$(head -c 2000 "$hooks")"
		stop imagegate-helm
		return 0
	}
	mapfile -t exempt < <(jq -r '.items[] | select(.kind == "ValidatingWebhookConfiguration") | .webhooks[0].namespaceSelector.matchExpressions[]? |
		select(.key == "kubernetes.io/metadata.name" and .operator == "NotIn") | .values[]' "$hooks")
	((${#exempt[@]})) || fail "the chart's validating webhook exempts namespaces (kubernetes.io/metadata.name NotIn)" \
		"$(jq -c '[.items[].webhooks[].namespaceSelector]' "$hooks")"

	expect_allowed "kubectl create of the chart's two webhook configurations, pointed at imagegate-helm, creates them" \
		'^validatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' \
		'^mutatingwebhookconfiguration\.admissionregistration\.k8s\.io/imagegate created$' -- \
		create -f "$hooks"
	expect_stored_webhooks "$hooks" "$port"
	if await_kc "the chart's webhook mutate.imagegate.dev is in force" "^$REGISTRY/dockerhub/library/nginx:1\\.25\$" -- "${probe[@]}" &&
		await_kc "the chart's webhook validate.imagegate.dev is in force" "$vw" -- \
			create deployment helm-probe --image=ghcr.io/acme/app:1.0 --dry-run=server; then
		helm_admission "$vw" "${exempt[@]}"
	fi

	# Leave nothing behind for the later scenarios on this apiserver.
	expect_ok "the chart's webhook configurations are deleted" -- delete --ignore-not-found -f "$hooks"
	await_kc "the chart's webhooks no longer called" '^nginx:1\.25$' -- "${probe[@]}" &&
		pass "with them deleted, a nginx:1.25 Deployment is neither rewritten nor refused (imagegate-helm still up)"
	stop imagegate-helm
	expect_ok "the Deployments and pods made through the chart's webhooks are deleted" -- \
		delete --ignore-not-found deployment/helm-web deployment/helm-hub pod/helm-good pod/helm-prom
	for ns in "${exempt[@]}"; do
		expect_ok "Deployment helm-exempt in namespace $ns is deleted" -- delete --ignore-not-found -n "$ns" deployment/helm-exempt
	done
}

# helm_admission VW-REGEX EXEMPT-NAMESPACE...: with the chart's webhooks in
# force (helm_install), what they refuse, admit and rewrite, and that the
# namespaces their namespaceSelector exempts are never sent to imagegate.
# Pods pass ImagePolicyWebhook too: this apiserver has it, and it judges
# after every mutating webhook, so it sees the rewritten images. It also
# refuses a pod's bad image before the validating webhook would, so the
# refusals are shown on Deployments, which only the webhook judges.
# shellcheck disable=SC2016 # $web, $img, $ARGS... are jq's
helm_admission() {
	local vw=$1 hub=$REGISTRY/dockerhub web good ns
	shift
	local mw_warn='Warning: imagegate rewrote'
	web=$(fresh_image helm-web)
	good=$(fresh_image helm-good)

	expect_refused "a Deployment from ghcr.io is refused by the chart's validating webhook, with imagegate's reason" \
		"$vw" "$(webhook_denied 'container "app"' ghcr.io/acme/app:1.0 'is not allowed')" -- \
		create deployment helm-ghcr --image=ghcr.io/acme/app:1.0
	expect_refused "an untagged nginx Deployment is rewritten by the chart's mutating webhook, then refused for latest naming the mirrored image" \
		"$vw" "$(webhook_denied 'container "nginx"' "$hub/library/nginx" latest)" -- \
		create deployment helm-untagged --image=nginx
	expect_allowed "a Deployment from $REGISTRY is admitted as written" \
		'^deployment\.apps/helm-web created$' "!$mw_warn" -- create deployment helm-web --image="$web"
	expect_allowed "a pod from $REGISTRY is admitted as written" \
		'^pod/helm-good created$' "!$mw_warn" -- run helm-good --image="$good" --restart=Never
	expect_reviews "imagegate-helm's /validate judged and allowed both" \
		2 "$(helm_reviews '.msg == "review" and .endpoint == "validate" and .outcome == "allowed" and
			(.images == [$web] or .images == [$good])' --arg web "$web" --arg good "$good")"

	expect_allowed "kubectl run --image=prometheus:2.6.1 creates the pod, rewritten by the chart's mutating webhook" \
		"^$mw_warn container \"helm-prom\" image \"prometheus:2\\.6\\.1\" to \"$hub/library/prometheus:2\\.6\\.1\" \\(mirror rule docker\\.io=$hub\\)\$" \
		'^pod/helm-prom created$' -- run helm-prom --image=prometheus:2.6.1 --restart=Never
	expect_output "the pod runs the mirrored image and records the image as written" \
		"$hub/library/prometheus:2.6.1 {\"helm-prom\":\"prometheus:2.6.1\"}" -- \
		get pod helm-prom -o 'jsonpath={.spec.containers[0].image} {.metadata.annotations.imagegate\.dev/original-images}'
	expect_reviews "the chart's validating webhook judged the mirrored image and allowed it" \
		1 "$(helm_reviews '.msg == "review" and .endpoint == "validate" and .outcome == "allowed" and .images == [$img]' \
			--arg img "$hub/library/prometheus:2.6.1")"
	expect_reviews "it never judged prometheus:2.6.1 as written" \
		0 "$(helm_reviews '.msg == "review" and any(.images[]; . == "prometheus:2.6.1")')"
	expect_allowed "Deployment helm-hub (nginx:1.25) is created with its pod template rewritten" \
		"^$mw_warn container \"nginx\" image \"nginx:1\\.25\" to \"$hub/library/nginx:1\\.25\"" \
		'^deployment\.apps/helm-hub created$' -- create deployment helm-hub --image=nginx:1.25
	expect_allowed "kubectl debug helm-prom with busybox:1.36 is rewritten too (the chart's rules cover pods/ephemeralcontainers)" \
		"^$mw_warn ephemeral container \"dbg\" image \"busybox:1\\.36\" to \"$hub/library/busybox:1\\.36\"" -- \
		debug helm-prom --profile=general --image=busybox:1.36 --container=dbg

	# The chart's namespaceSelector: nginx:1.25 as written would be rewritten
	# by one webhook and refused by the other, were either called.
	for ns; do
		expect_allowed "in namespace $ns (exempt by the chart's namespaceSelector) a nginx:1.25 Deployment is created" \
			'^deployment\.apps/helm-exempt created$' "!$mw_warn" -- create -n "$ns" deployment helm-exempt --image=nginx:1.25
		expect_output "its image is nginx:1.25 as written" "nginx:1.25" -- \
			get -n "$ns" deployment helm-exempt -o 'jsonpath={.spec.template.spec.containers[0].image}'
	done
	if (($#)); then
		expect_reviews "imagegate-helm got no request from namespace $(printf '%s\n' "$@" | paste -sd,) on either webhook" \
			0 "$(helm_reviews '.endpoint != null and (.namespace | IN($ARGS.positional[]))' --args "$@")"
	fi
}

# helm_reviews JQ-CONDITION [JQ-ARG...]: how many lines imagegate-helm has
# logged since its latest start that meet JQ-CONDITION.
helm_reviews() {
	local cond=$1
	shift
	log_since_start imagegate-helm | jq -nR "[inputs | fromjson? | select($cond)] | length" "$@"
}

# expect_stored_webhooks FILE PORT: the webhook configurations of FILE (a
# List) are stored with every field FILE gives them, as FILE gives it (the
# apiserver may add its defaults), and each webhook's clientConfig is only
# the URL on imagegate-helm's PORT and the run's CA.
expect_stored_webhooks() {
	local file=$1 port=$2 desc
	desc="the stored configurations keep every field the chart rendered (rules, namespaceSelector, failurePolicy, sideEffects, timeoutSeconds, matchPolicy, reinvocationPolicy, labels); each clientConfig is a URL on 127.0.0.1:$port and the run's CA"
	kc get -f "$file" -o json
	# shellcheck disable=SC2016 # $want, $b, ... are jq's
	if ((KC_RC == 0)) && jq -e --slurpfile want "$file" '
		def within($b): . as $a |
			if ($a | type) == "object" then
				($b | type) == "object" and all($a | keys[]; . as $k | $b | has($k) and ($a[$k] | within($b[$k])))
			elif ($a | type) == "array" then
				($b | type) == "array" and ($a | length) == ($b | length) and
				all(range($a | length); . as $i | $a[$i] | within($b[$i]))
			else $a == $b end;
		[.items[] | {key: .kind, value: .}] | from_entries as $got |
		($want[0].items | length) == 2 and
		all($want[0].items[]; . as $w | $got[$w.kind] as $g | $g != null and ($w | within($g)) and
			all($g.webhooks[]; (.clientConfig | keys) == ["caBundle", "url"] and
				(.clientConfig.url | startswith("https://127.0.0.1:\($port)/"))))' --arg port "$port" <<<"$KC_OUT" >/dev/null; then
		pass "$desc"
		jq -r '.items[].webhooks[] | "\(.name): \(.clientConfig.url), failurePolicy \(.failurePolicy), timeoutSeconds \(.timeoutSeconds), namespaceSelector \(.namespaceSelector | tojson)"' "$file" | indent
	else
		fail "$desc" "$(head -c 4000 <<<"$KC_OUT")"
	fi
}

# expect_ok_cmd DESCRIPTION CMD...: CMD succeeds.
expect_ok_cmd() {
	local desc=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	if ((rc == 0)); then pass "$desc"; else fail "$desc" "$* (exit $rc):"$'\n'"$out"; fi
}

# expect_fail_cmd DESCRIPTION REGEX CMD...: CMD fails, saying REGEX.
expect_fail_cmd() {
	local desc=$1 re=$2 out rc=0
	shift 2
	out=$("$@" 2>&1) || rc=$?
	if ((rc != 0)) && grep -Eq -- "$re" <<<"$out"; then
		pass "$desc"
	else
		fail "$desc" "$* (exit $rc), expected a failure matching $re:"$'\n'"$out"
	fi
}

# expect_grep DESCRIPTION REGEX FILE
expect_grep() {
	if grep -Eq -- "$2" "$3"; then pass "$1"; else fail "$1" "no line of $3 matches $2"; fi
}

# expect_dry_run DESCRIPTION N FILE: the apiserver accepts all N objects of
# FILE in a server dry run.
expect_dry_run() {
	local desc=$1 want=$2 file=$3 got
	kc apply --dry-run=server -f "$file"
	got=$(grep -cE ' \(server dry run\)$' <<<"$KC_OUT" || true)
	if ((KC_RC == 0 && got == want)); then
		pass "$desc"
	else
		fail "$desc" "kubectl apply --dry-run=server -f $file (exit $KC_RC, $got of $want objects):"$'\n'"$KC_OUT"
	fi
}

# expect_same_policy FILE: in the manifests of FILE, the audit CronJob
# runs imagegate audit --report --fail-on-findings=false with the
# Deployment's policy flags, policy file volume and mount, and image, under
# the same restricted security context.
expect_same_policy() {
	local file=$1 desc objects got
	desc="${file##*/}: the audit CronJob judges with the Deployment's policy and registry flags and volumes, image and security context"
	objects=$("$KUBECTL" create --dry-run=client -o json -f "$file" 2>&1) || {
		fail "$desc" "kubectl create --dry-run=client -f $file: $objects"
		return
	}
	got=$(jq -s '
		def policy: [.[] | select(test("^--(registry-whitelist|mode|registry-mirror|config|pin-digests|registry-credentials|registry-ca-file|registry-timeout|registry-review-timeout|digest-cache-ttl)(=|$)"))];
		def mine: [.[] | select(.name == "policy" or .name == "registry-credentials" or .name == "registry-ca")];
		[.[] | if .kind == "List" then .items[] else . end] |
		(.[] | select(.kind == "Deployment") | .spec.template.spec) as $d |
		(.[] | select(.kind == "CronJob") | .spec.jobTemplate.spec.template.spec) as $c |
		$c.containers[0].args[:3] == ["audit", "--report", "--fail-on-findings=false"] and
		($c.containers[0].args | policy) == ($d.containers[0].args | policy) and
		($c.containers[0].args | policy | length) > 0 and
		($c.containers[0].volumeMounts // [] | mine) == ($d.containers[0].volumeMounts | mine) and
		($c.volumes // [] | mine) == ($d.volumes | mine) and
		$c.containers[0].image == $d.containers[0].image and
		$c.securityContext == $d.securityContext and
		$c.containers[0].securityContext == $d.containers[0].securityContext and
		$c.serviceAccountName == "imagegate-audit" and $c.automountServiceAccountToken == true' <<<"$objects" 2>&1)
	if [[ $got == true ]]; then pass "$desc"; else fail "$desc" "jq said $got of $file"; fi
}

# expect_same_as_kustomize [COMPONENT...]: config/ (with the COMPONENTs
# enabled in that order, as config/kustomization.yaml's comment says) and the
# chart with their values files render the same objects, kept in
# $WORK/helm/kustomize-NAME.yaml and chart-NAME.yaml (NAME: the components
# joined by +, or base).
expect_same_as_kustomize() {
	local tmp k h c name=base desc args=(--template "${1:-base}")
	desc="kubectl kustomize config/${1:+ with $*} equals the chart's rendering"
	(($# == 0)) || name=$(IFS=+ && echo "$*")
	tmp=$(mktemp -d "$WORK/helm/kustomize.XXXXXX")
	cp -R "$ROOT/config" "$tmp/config"
	# config/kustomization.yaml lists its components commented out.
	(($# == 0)) || printf 'components:\n' >>"$tmp/config/kustomization.yaml"
	for c; do
		printf '  - %s\n' "$c" >>"$tmp/config/kustomization.yaml"
	done
	# The first component is render-config.sh's; the others' values files
	# go on top, with what render-config.sh adds for them.
	for c in "${@:2}"; do
		args+=(-f "$ROOT/config/helm/render/$c.yaml")
		[[ $c != policy-file ]] || args+=(--set-file "policy=$ROOT/config/policy-file/policy.yaml")
		[[ $c != audit-report ]] || args+=(--include-crds)
	done
	"$KUBECTL" kustomize "$tmp/config" >"$WORK/helm/kustomize-$name.yaml" 2>"$tmp/err" || {
		fail "$desc" "kubectl kustomize: $(tail -n 5 "$tmp/err")"
		return
	}
	"$ROOT/hack/render-config.sh" "${args[@]}" >"$WORK/helm/chart-$name.yaml" 2>"$tmp/err" || {
		fail "$desc" "hack/render-config.sh ${args[*]}: $(tail -n 5 "$tmp/err")"
		return
	}
	k=$(as_json <"$WORK/helm/kustomize-$name.yaml" 2>&1) || {
		fail "$desc" "kubectl create --dry-run=client of kubectl kustomize's output: $k"
		return
	}
	h=$(as_json <"$WORK/helm/chart-$name.yaml" 2>&1) || {
		fail "$desc" "kubectl create --dry-run=client of helm template's output: $h"
		return
	}
	if [[ $k == "$h" ]]; then
		pass "$desc ($(jq length <<<"$k") objects)"
	else
		fail "$desc" "$(diff <(jq . <<<"$k") <(jq . <<<"$h") | head -n 40)"
	fi
}

# as_json: the YAML objects on stdin (kubectl prints each as a JSON
# document) as one JSON array, sorted by kind and
# name, keys sorted (kubectl parses the YAML; the apiserver only maps kinds).
as_json() {
	"$KUBECTL" create --dry-run=client -o json -f - |
		jq -cSs '[.[] | if .kind == "List" then .items[] else . end] | sort_by(.kind, .metadata.name)'
}

# helm_crds: minimal CRDs for the kinds the chart renders whose operators the
# e2e apiserver lacks.
helm_crds() {
	local spec group plural kind
	for spec in cert-manager.io:issuers:Issuer cert-manager.io:certificates:Certificate \
		monitoring.coreos.com:servicemonitors:ServiceMonitor monitoring.coreos.com:prometheusrules:PrometheusRule; do
		IFS=: read -r group plural kind <<<"$spec"
		cat <<-EOF
			---
			apiVersion: apiextensions.k8s.io/v1
			kind: CustomResourceDefinition
			metadata:
			  name: $plural.$group
			spec:
			  group: $group
			  scope: Namespaced
			  names: {plural: $plural, singular: ${kind,,}, kind: $kind}
			  versions:
			    - name: v1
			      served: true
			      storage: true
			      schema:
			        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
		EOF
	done
}
