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
#    the chart with their three values files, and in both the audit CronJob
#    has the Deployment's policy flags and volume: the two components patch
#    the CronJob as they patch the Deployment.
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
	expect_grep "audit-report: the chart ships the Report CRD (helm template --include-crds)" \
		'^  name: reports\.openreports\.io$' "$dir/audit-report.yaml"
	expect_same_policy "$dir/audit-report.yaml"
	expect_same_policy "$dir/everything.yaml"

	local component
	expect_same_as_kustomize
	for component in mutating-webhook cert-manager policy-file client-auth hpa prometheus audit-report; do
		expect_same_as_kustomize "$component"
	done
	# The components that change the policy, listed after audit-report as
	# config/kustomization.yaml's comment says.
	expect_same_as_kustomize audit-report mutating-webhook policy-file
	expect_same_policy "$dir/kustomize-audit-report+mutating-webhook+policy-file.yaml"
	expect_same_policy "$dir/chart-audit-report+mutating-webhook+policy-file.yaml"
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

# expect_same_policy FILE: in the manifests of FILE, the audit CronJob
# runs imagegate audit --report --fail-on-findings=false with the
# Deployment's policy flags, policy file volume and mount, and image, under
# the same restricted security context.
expect_same_policy() {
	local file=$1 desc objects got
	desc="${file##*/}: the audit CronJob judges with the Deployment's policy flags, policy volume, image and security context"
	objects=$("$KUBECTL" create --dry-run=client -o json -f "$file" 2>&1) || {
		fail "$desc" "kubectl create --dry-run=client -f $file: $objects"
		return
	}
	got=$(jq -s '
		def policy: [.[] | select(test("^--(registry-whitelist|mode|registry-mirror|config)="))];
		def mine: [.[] | select(.name == "policy")];
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
