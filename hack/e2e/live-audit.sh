# shellcheck shell=bash
# Issue 16: `imagegate audit --kubeconfig` against the real apiserver.
#
# On a kube-apiserver of its own with no imagegate admission at all (no
# ImagePolicyWebhook, and a fresh etcd prefix, so no webhook configuration
# and no object of another scenario), one object of every kind the audit
# lists is created as written, violations and all, with kubectl. The audit,
# in pages of one object so that paging runs, must find each of them, with
# exit 1, and print what auditing `kubectl get … -A -o json` of the same
# kinds prints; `--namespace` of a clean namespace exits 0; `-o json` holds
# the same findings.
#
# Then the reports, as the chart's audit CronJob writes them. This
# apiserver authorizes with RBAC (the admin above is in system:masters): the
# chart's Report CRD and its audit ServiceAccount, ClusterRole and
# ClusterRoleBinding (helm template, namespace imagegate) are applied, and
# every audit from here runs with a token of that ServiceAccount, so the
# chart's least RBAC is proven to suffice (and kubectl auth can-i shows what
# it may not do). `--report` writes the Report imagegate in shop, with one
# fail result per object naming it by uid, none in clean, and exits 1; the
# CronJob's own arguments exit 0 and update the report in place; after
# kubectl set image fixes one object, the same report (same uid) has one
# result fewer; once shop is clean, its report is deleted.
LA_RUNS=0
scenario_live_audit() {
	say "scenario: imagegate audit --kubeconfig lists the cluster and judges what runs"
	LA_RUNS=$((LA_RUNS + 1))
	# port is set and read by name (free_port, on_free_ports).
	# shellcheck disable=SC2034
	local port dir=$WORK/live-audit-$LA_RUNS kind
	local -x KUBECONFIG=$WORK/kubeconfig-la
	local kinds=(Pod PodTemplate ReplicationController Deployment ReplicaSet StatefulSet DaemonSet Job CronJob)
	local resources=pods,podtemplates,replicationcontrollers,deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs
	local audit=("$IMAGEGATE" audit "${FLAG_POLICY[@]}" --kubeconfig "$KUBECONFIG")
	# The chart's RBAC must be what lets the audit run, so RBAC decides.
	# shellcheck disable=SC2034 # read by start_apiserver
	local AUTHORIZATION_MODE=RBAC
	mkdir -p "$dir"
	free_port port
	on_free_ports port -- start_apiserver kube-apiserver-la port "$KUBECONFIG" \
		--etcd-prefix="/registry-live-audit-$LA_RUNS"

	la_objects >"$dir/objects.yaml"
	expect_created "one object of each of the ${#kinds[@]} kinds, from quay.io, and a clean Deployment are created without admission" -- \
		create -f "$dir/objects.yaml"

	local rows=()
	for kind in "${kinds[@]}"; do
		rows+=("^shop +$kind/${kind,,} +app +quay\.io/acme/${kind,,}:1 +default/registry +denied +.*registry quay\.io is not allowed")
	done
	la_expect "the live audit, a page an object, finds every kind and exits 1" 1 "$dir/live.txt" \
		"${rows[@]}" "^9 finding\(s\) in 10 object\(s\) with 10 image\(s\), policy [0-9a-f]{16}$" -- --chunk-size=1
	local rc=0 same="the live table is the table of auditing kubectl get $resources -A -o json"
	"$KUBECTL" get "$resources" -A -o json >"$dir/kubectl.json" 2>"$dir/kubectl.err" || rc=$?
	((rc != 0)) || "$IMAGEGATE" audit "${FLAG_POLICY[@]}" -f "$dir/kubectl.json" >"$dir/file.txt" 2>"$dir/file.err" || rc=$?
	if ((rc == 1)) && diff -u "$dir/file.txt" "$dir/live.txt" >"$dir/diff.txt"; then
		pass "$same"
	else
		fail "$same" "exit $rc, want 1:"$'\n'"$(cat "$dir/kubectl.err" "$dir/file.err" "$dir/diff.txt" 2>/dev/null)"
	fi
	la_expect "--namespace clean finds nothing there and exits 0" 0 "$dir/clean.txt" \
		"^0 finding\(s\) in 1 object\(s\) with 1 image\(s\)" -- --namespace clean
	la_expect "-o json holds the 9 findings, one per kind" 1 "$dir/live.json" '"findings": \[' -- -o json
	if [[ $(jq -r '[.findings[].kind] | join(" ")' "$dir/live.json" 2>&1) == "${kinds[*]}" ]]; then
		pass "-o json names the kinds in the order they are listed"
	else
		fail "-o json names the kinds in the order they are listed" "$(jq -c '[.findings[].kind]' "$dir/live.json" 2>&1)"
	fi
	la_reports
	stop kube-apiserver-la
}

# la_reports: the reports half of scenario_live_audit, on its apiserver,
# with its locals (dir, port, kinds, resources).
la_reports() {
	local render=$ROOT/hack/render-config.sh crd=$ROOT/config/helm/imagegate/crds/reports.yaml
	local sa_kc=$dir/kubeconfig-audit token report_uid cron=() uids
	local -x HELM
	HELM=$("$ROOT/hack/install-helm.sh") || die "hack/install-helm.sh failed"
	expect_created "the chart's Report CRD (crds/reports.yaml) is created" -- apply -f "$crd"
	expect_ok "the Report CRD is established" -- wait --for=condition=Established --timeout=30s -f "$crd"
	"$render" --template audit-report --show-only templates/namespace.yaml \
		--show-only templates/audit-serviceaccount.yaml --show-only templates/audit-clusterrole.yaml \
		--show-only templates/audit-clusterrolebinding.yaml >"$dir/audit-rbac.yaml" 2>&1 ||
		fail "helm template of the chart's audit RBAC" "$(cat "$dir/audit-rbac.yaml")"
	expect_created "the chart's namespace imagegate, audit ServiceAccount, ClusterRole and ClusterRoleBinding are applied" -- \
		apply -f "$dir/audit-rbac.yaml"
	kc -n imagegate create token imagegate-audit --duration=1h
	((KC_RC == 0)) || die "kubectl create token imagegate-audit: $KC_OUT"
	token=$KC_OUT
	cat >"$sa_kc" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		  - name: e2e
		    cluster:
		      server: https://127.0.0.1:$port
		      certificate-authority: $WORK/pki/ca.crt
		users:
		  - name: imagegate-audit
		    user:
		      token: $token
		contexts:
		  - name: e2e
		    context: {cluster: e2e, user: imagegate-audit}
		current-context: e2e
	EOF
	la_can yes "the audit ServiceAccount may list the kinds it judges and list, create, update and delete reports" \
		"list ${resources//,/ }" "list reports.openreports.io" "create reports.openreports.io" \
		"update reports.openreports.io" "delete reports.openreports.io"
	la_can no "the audit ServiceAccount may not read secrets, get or watch pods, change workloads, or patch reports" \
		"get secrets" "list secrets" "get pods" "watch pods" "delete pods" "create pods" \
		"update deployments.apps" "patch reports.openreports.io" "list configmaps" "list nodes"

	local audit=("$IMAGEGATE" audit "${FLAG_POLICY[@]}" --kubeconfig "$sa_kc")
	la_expect "as the audit ServiceAccount, audit --report finds the 9 objects and exits 1" 1 "$dir/report.txt" \
		"^9 finding\(s\) in 10 object\(s\)" -- --report
	kc get "$resources" -n shop -o json
	uids=$(jq -c '[.items[] | {key: (.kind + "/" + .metadata.name), value: .metadata.uid}] | from_entries' <<<"$KC_OUT")
	la_report "the Report imagegate in shop has a fail result per object, naming it by uid; clean has none" \
		"${kinds[*]}"
	report_uid=$LA_REPORT_UID
	expect_allowed "kubectl get reps -A (the short name) prints the report's summary" \
		'^NAMESPACE +NAME +PASS +FAIL +WARN +ERROR +SKIP +AGE$' '^shop +imagegate +[^ ]+ +9 ' -- get reps -A

	# What the chart's CronJob runs, from the chart.
	"$render" --template audit-report --show-only templates/audit-cronjob.yaml >"$dir/cronjob.yaml" 2>&1 &&
		mapfile -t cron < <("$KUBECTL" create --dry-run=client -o json -f "$dir/cronjob.yaml" |
			jq -r '.spec.jobTemplate.spec.template.spec.containers[0].args[]')
	((${#cron[@]} > 3)) || fail "the chart's audit CronJob's arguments" "$(cat "$dir/cronjob.yaml")"
	audit=("$IMAGEGATE" "${cron[@]}" --kubeconfig "$sa_kc")
	la_expect "the CronJob's arguments (${cron[*]:0:3} ...) exit 0 with the same findings" 0 "$dir/cron.txt" \
		"^9 finding\(s\) in 10 object\(s\)" --
	la_report "the CronJob's run keeps the report, in place" "${kinds[*]}" "$report_uid"

	expect_ok "kubectl set image fixes the Deployment in shop" -- \
		-n shop set image deployment/deployment "app=$REGISTRY/acme/deployment:1"
	la_expect "the next run finds 8" 0 "$dir/cron-fixed.txt" "^8 finding\(s\) in 10 object\(s\)" --
	la_report "the same report (same uid) has one result fewer: none for the Deployment" \
		"${kinds[*]/Deployment/}" "$report_uid"

	expect_ok "the other objects in shop are deleted" -- \
		-n shop delete "${resources/deployments,/}" --all --wait=false
	la_expect "a run over a clean shop finds nothing" 0 "$dir/cron-clean.txt" "^0 finding\(s\)" --
	expect_refused "shop's report is deleted once shop is clean" 'NotFound|not found' -- get report imagegate -n shop
	expect_output "no report is left" "No resources found" -- get reports -A
}

# la_can ANSWER DESCRIPTION "VERB RESOURCE..."...: kubectl auth can-i, as
# the audit ServiceAccount (sa_kc) in every namespace, answers ANSWER (yes
# or no) for each VERB and RESOURCE.
la_can() {
	local want=$1 desc=$2 spec verb res r got wrong=()
	shift 2
	for spec in "$@"; do
		read -r verb res <<<"$spec"
		for r in $res; do
			got=$("$KUBECTL" --kubeconfig "$sa_kc" auth can-i "$verb" "$r" --all-namespaces 2>&1 || true)
			[[ $got == "$want" ]] || wrong+=("$verb $r: $got")
		done
	done
	if ((${#wrong[@]} == 0)); then
		pass "$desc"
	else
		fail "$desc" "kubectl auth can-i, want $want:"$'\n'"$(printf '%s\n' "${wrong[@]}")"
	fi
}

# la_report DESCRIPTION "KIND..." [UID]: the only Report is imagegate in
# shop, written by imagegate, with one fail result per KIND: the registry
# check of the default rule on the object KIND/kind (its uid as in uids,
# the caller's), container app, image quay.io/acme/kind:1; with UID, it is
# that object still. Sets LA_REPORT_UID.
la_report() {
	local desc=$1 want
	want=$(jq -nc --arg kinds "$2" '$kinds | split(" ") | map(select(. != "")) | sort')
	kc get reports -A -o json
	if ((KC_RC == 0)) && jq -e --argjson kinds "$want" --argjson uids "$uids" --arg uid "${3-}" '
		{Pod: "v1", PodTemplate: "v1", ReplicationController: "v1", Deployment: "apps/v1",
		 ReplicaSet: "apps/v1", StatefulSet: "apps/v1", DaemonSet: "apps/v1", Job: "batch/v1",
		 CronJob: "batch/v1"} as $api |
		(.items | length) == 1 and (.items[0] |
		.metadata.namespace == "shop" and .metadata.name == "imagegate" and
		($uid == "" or .metadata.uid == $uid) and
		.metadata.labels["app.kubernetes.io/managed-by"] == "imagegate" and
		.metadata.labels["app.kubernetes.io/name"] == "imagegate" and
		.source == "imagegate" and
		.summary.fail == ($kinds | length) and (.summary.warn // 0) == 0 and
		([.results[].resources[0].kind] | sort) == $kinds and
		all(.results[];
			.result == "fail" and .policy == "default" and .rule == "registry" and .scored == true and
			(.severity == "high" or .severity == "medium") and .timestamp.seconds > 0 and
			(.message | test("registry quay\\.io is not allowed")) and
			(.resources | length) == 1 and
			(.resources[0] | .namespace == "shop" and .name == (.kind | ascii_downcase) and
				.apiVersion == $api[.kind] and .uid == $uids[.kind + "/" + .name]) and
			.properties.container == "app" and
			.properties.image == "quay.io/acme/" + (.resources[0].kind | ascii_downcase) + ":1"))' \
		<<<"$KC_OUT" >/dev/null; then
		pass "$desc"
		LA_REPORT_UID=$(jq -r '.items[0].metadata.uid' <<<"$KC_OUT")
	else
		fail "$desc" "kubectl get reports -A -o json (exit $KC_RC), want results for $want${3:+, uid $3}:"$'\n'"$KC_OUT"
		LA_REPORT_UID=
	fi
}

# la_expect DESCRIPTION RC OUT REGEX... -- ARGS...: imagegate audit ARGS
# against the scenario's apiserver exits RC, and what it prints (saved in
# OUT) matches every extended REGEX.
la_expect() {
	local desc=$1 want=$2 out=$3 rc=0 re missing=()
	shift 3
	local regexes=()
	while [[ $1 != -- ]]; do
		regexes+=("$1")
		shift
	done
	shift
	"${audit[@]}" "$@" >"$out" 2>"$out.err" || rc=$?
	for re in "${regexes[@]}"; do
		grep -Eq -- "$re" "$out" || missing+=("$re")
	done
	if ((rc == want)) && ((${#missing[@]} == 0)); then
		pass "$desc"
		[[ $out == *.json ]] || indent <"$out"
	else
		fail "$desc" "imagegate audit $* (exit $rc, want $want) did not match: ${missing[*]}"$'\n'"$(cat "$out" "$out.err")"
	fi
}

# la_objects: the scenario's objects. Namespace shop has one object of
# every kind the audit lists, each running quay.io/acme/KIND:1, which the
# flag policy (registry.my.com only) refuses; namespace clean has one
# Deployment it allows.
la_objects() {
	local k spec='{containers: [{name: app, image: IMAGE}]}'
	cat <<-EOF
		apiVersion: v1
		kind: Namespace
		metadata: {name: shop}
		---
		apiVersion: v1
		kind: Namespace
		metadata: {name: clean}
		---
		apiVersion: apps/v1
		kind: Deployment
		metadata: {name: app, namespace: clean}
		spec:
		  selector: {matchLabels: {app: app}}
		  template:
		    metadata: {labels: {app: app}}
		    spec: {containers: [{name: app, image: $REGISTRY/app:1.0}]}
		---
		apiVersion: v1
		kind: Pod
		metadata: {name: pod, namespace: shop}
		spec: ${spec/IMAGE/quay.io/acme/pod:1}
		---
		apiVersion: v1
		kind: PodTemplate
		metadata: {name: podtemplate, namespace: shop}
		template: {spec: ${spec/IMAGE/quay.io/acme/podtemplate:1}}
		---
		apiVersion: v1
		kind: ReplicationController
		metadata: {name: replicationcontroller, namespace: shop}
		spec:
		  selector: {app: rc}
		  template:
		    metadata: {labels: {app: rc}}
		    spec: ${spec/IMAGE/quay.io/acme/replicationcontroller:1}
	EOF
	for k in Deployment ReplicaSet StatefulSet DaemonSet; do
		cat <<-EOF
			---
			apiVersion: apps/v1
			kind: $k
			metadata: {name: ${k,,}, namespace: shop}
			spec:
			  selector: {matchLabels: {app: ${k,,}}}
			  template:
			    metadata: {labels: {app: ${k,,}}}
			    spec: ${spec/IMAGE/quay.io/acme/${k,,}:1}
		EOF
	done
	cat <<-EOF
		---
		apiVersion: batch/v1
		kind: Job
		metadata: {name: job, namespace: shop}
		spec:
		  template:
		    spec: {restartPolicy: Never, containers: [{name: app, image: quay.io/acme/job:1}]}
		---
		apiVersion: batch/v1
		kind: CronJob
		metadata: {name: cronjob, namespace: shop}
		spec:
		  schedule: "0 0 * * *"
		  jobTemplate:
		    spec:
		      template:
		        spec: {restartPolicy: Never, containers: [{name: app, image: quay.io/acme/cronjob:1}]}
	EOF
}
