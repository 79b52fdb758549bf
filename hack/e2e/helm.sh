# shellcheck shell=bash
# Issue 16: the Helm chart config/helm/imagegate on the real apiserver.
#
# 1. Each values set of the matrix (the chart's defaults, with generated
#    certificates; the kustomize base; the base with each component's values
#    file, config/helm/render/*.yaml; and every option at once) is rendered
#    with `helm template` and applied with `kubectl apply --dry-run=server`:
#    the apiserver validates and admits every object without storing it.
# 2. config/ with each kustomize component renders the same objects as the
#    chart with that component's values file (`kubectl kustomize` against
#    hack/render-config.sh --template, compared as JSON): the components'
#    hand-kept patches agree with the chart.
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

	helm_crds >"$crds"
	expect_ok "the stand-in CRDs for cert-manager and the Prometheus Operator are created" -- apply -f "$crds"
	expect_ok "the CRDs are established" -- wait --for=condition=Established --timeout=30s -f "$crds"
	# A server dry run creates no namespace: create it for real, from the chart.
	"$render" --template base --show-only templates/namespace.yaml >"$dir/namespace.yaml"
	expect_ok "the chart's Namespace imagegate is applied" -- apply -f "$dir/namespace.yaml"

	# set NAME: a values set; its manifests in $dir/NAME.yaml.
	local sets=(defaults base mutating-webhook policy-file cert-manager client-auth hpa prometheus everything)
	for set in "${sets[@]}"; do
		out=$dir/$set.yaml
		case $set in
		defaults) "$helm" template imagegate "$chart" --namespace imagegate >"$out" ;;
		everything)
			"$render" --template policy-file -f "$ROOT/config/helm/render/mutating-webhook.yaml" \
				-f "$ROOT/config/helm/render/cert-manager.yaml" -f "$ROOT/config/helm/render/client-auth.yaml" \
				-f "$ROOT/config/helm/render/hpa.yaml" -f "$ROOT/config/helm/render/prometheus.yaml" \
				--set-file clientAuth.caBundle="$WORK/pki/ca.crt" >"$out"
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

	local component
	for component in "" mutating-webhook cert-manager policy-file client-auth hpa prometheus; do
		expect_same_as_kustomize "$component"
	done
	expect_ok "the stand-in CRDs are deleted" -- delete -f "$crds"
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

# expect_same_as_kustomize [COMPONENT]: config/ (with COMPONENT enabled, as
# config/kustomization.yaml's comment says) and the chart with that
# component's values file render the same objects.
expect_same_as_kustomize() {
	local c=$1 tmp k h desc="kubectl kustomize config/${1:+ with component $1} equals the chart's rendering"
	tmp=$(mktemp -d "$WORK/helm/kustomize.XXXXXX")
	cp -R "$ROOT/config" "$tmp/config"
	# config/kustomization.yaml lists its components commented out.
	[[ -z $c ]] || printf 'components:\n  - %s\n' "$c" >>"$tmp/config/kustomization.yaml"
	k=$(as_json < <("$KUBECTL" kustomize "$tmp/config" 2>&1)) || {
		fail "$desc" "kubectl kustomize: $k"
		return
	}
	h=$(as_json < <("$ROOT/hack/render-config.sh" --template "${c:-base}" 2>&1)) || {
		fail "$desc" "helm template: $h"
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
