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
	stop kube-apiserver-la
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
