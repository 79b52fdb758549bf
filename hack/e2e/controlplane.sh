# shellcheck shell=bash
# The e2e suite's control plane, sourced by hack/e2e.sh: certificates, etcd,
# apiservers, imagegates, and the two wirings between them: ImagePolicyWebhook
# from examples/apiserver/ and the webhooks from config/ (render_overlay).

# ossl ARG...: openssl, its output in $LOGS/openssl.log; dies when it fails.
ossl() { openssl "$@" >>"$LOGS/openssl.log" 2>&1 || die "openssl failed: $(tail -n 5 "$LOGS/openssl.log")"; }

# make_ca DIR NAME CN: DIR/NAME.crt and DIR/NAME.key, a CA for a day.
make_ca() {
	ossl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout "$1/$2.key" -out "$1/$2.crt" -subj "/CN=$3" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# make_cert CA USAGE OUT CN [KEY-ARG...]: OUT.crt and OUT.key, a certificate
# for a day for CN from CA (CA.crt and CA.key), for USAGE: serverAuth (then
# for 127.0.0.1 and localhost) or clientAuth. The key is RSA 2048 unless
# KEY-ARGs (openssl req's) say otherwise.
make_cert() {
	local ca=$1 usage=$2 out=$3 cn=$4
	shift 4
	(($#)) || set -- -newkey rsa:2048
	mkdir -p "${out%/*}"
	printf '%s\n' "extendedKeyUsage=$usage" "keyUsage=critical,digitalSignature,keyEncipherment" \
		"basicConstraints=CA:FALSE" >"$out.ext"
	[[ $usage != serverAuth ]] || echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >>"$out.ext"
	ossl req "$@" -nodes -keyout "$out.key" -out "$out.csr" -subj "/CN=$cn"
	ossl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
		-days 1 -extfile "$out.ext" -out "$out.crt"
}

# make_certs: this run's CA in $WORK/pki, serving certificates from it for
# imagegate and the apiserver, and the apiserver's service-account key pair.
make_certs() {
	local pki=$WORK/pki name
	mkdir -p "$pki"
	make_ca "$pki" ca imagegate-e2e-ca
	for name in imagegate kube-apiserver; do make_cert "$pki/ca" serverAuth "$pki/$name" "$name"; done
	ossl genrsa -out "$pki/sa.key" 2048
	ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
	say "certificates made in $pki"
}

# write_kubeconfig FILE PORT: kubectl's configuration for the apiserver on
# PORT, as the static-token admin, namespace default.
write_kubeconfig() {
	cat >"$1" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		  - name: e2e
		    cluster:
		      server: https://127.0.0.1:$2
		      certificate-authority: $WORK/pki/ca.crt
		users:
		  - name: e2e-admin
		    user:
		      token: $TOKEN
		contexts:
		  - name: e2e
		    context: {cluster: e2e, user: e2e-admin, namespace: default}
		current-context: e2e
	EOF
}

# start_etcd: etcd on ETCD_PORT and ETCD_PEER_PORT; returns 2 when one of
# them was taken (see on_free_ports).
start_etcd() {
	rm -rf "$WORK/etcd"
	start etcd etcd --name e2e --data-dir "$WORK/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT"
	wait_for etcd 60 "${PIDS[etcd]}" curl -fsS "http://127.0.0.1:$ETCD_PORT/health" || {
		stop etcd
		return 2
	}
}

# start_apiserver NAME PORTVAR KUBECONFIG [ARG...]: a kube-apiserver on the
# port in PORTVAR over this run's etcd, with the flags every apiserver here
# needs plus ARGs; writes KUBECONFIG to reach it. Returns once it serves the
# default and kube-system namespaces, or 2 when its port was taken (see
# on_free_ports). It authorizes with AUTHORIZATION_MODE (default
# AlwaysAllow; a caller sets RBAC, say, for a scenario that checks
# permissions: the static-token admin is in system:masters, so it keeps
# every right). A variable, not an ARG: a second --authorization-mode would
# be appended to the first (AlwaysAllow, which allows all), not replace it.
start_apiserver() {
	local name=$1 portvar=$2 kubeconfig=$3 cfg=$WORK/apiserver ns
	shift 3
	write_kubeconfig "$kubeconfig" "${!portvar}"
	start "$name" "$K8S_BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
		--secure-port="${!portvar}" \
		--cert-dir="$WORK/$name-certs" \
		--tls-cert-file="$WORK/pki/kube-apiserver.crt" \
		--tls-private-key-file="$WORK/pki/kube-apiserver.key" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$WORK/pki/sa.pub" \
		--service-account-signing-key-file="$WORK/pki/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 \
		--endpoint-reconciler-type=none \
		--token-auth-file="$cfg/tokens.csv" \
		--authorization-mode="${AUTHORIZATION_MODE:-AlwaysAllow}" \
		--disable-admission-plugins=ServiceAccount \
		--v=2 "$@"
	# /readyz first, then the namespaces the apiserver creates in the
	# background after it says it is ready.
	wait_for "$name /readyz" 120 "${PIDS[$name]}" \
		"$KUBECTL" --kubeconfig "$kubeconfig" get --raw /readyz || {
		stop "$name"
		return 2
	}
	for ns in default kube-system; do
		wait_for "$name: namespace $ns" 60 "${PIDS[$name]}" \
			"$KUBECTL" --kubeconfig "$kubeconfig" get namespace "$ns"
	done
}

# The policy of every imagegate that brings none of its own: flags only.
FLAG_POLICY=(--registry-whitelist "$REGISTRY" --reject-latest=true --allow-break-glass=true)

# start_imagegate [NAME PORTVAR [ARG...]]: imagegate (default: the instance
# named imagegate on $IMAGEGATE_PORT) with this run's serving certificate and
# FLAG_POLICY, plus ARGs. As serve_imagegate.
# shellcheck disable=SC2120 # on_free_ports passes the arguments
start_imagegate() {
	local name=${1:-imagegate} portvar=${2:-IMAGEGATE_PORT}
	shift $(($# < 2 ? $# : 2))
	serve_imagegate "$name" "$portvar" \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		"${FLAG_POLICY[@]}" "$@"
}

# serve_imagegate NAME PORTVAR ARG...: imagegate serve, reviews on the port in
# PORTVAR, metrics on a port the kernel picks (read back from its log: see
# metrics_port), logging JSON at debug, plus ARGs: the serving certificate
# and the policy are the caller's. Returns once /readyz answers on the
# metrics listener (the kubelet's way, which works with --client-ca-file
# too), or 2 when the review port was taken (see on_free_ports).
serve_imagegate() {
	local name=$1 portvar=$2
	shift 2
	start "$name" "$IMAGEGATE" serve --listen "127.0.0.1:${!portvar}" --metrics-listen 127.0.0.1:0 \
		--log-format=json --log-level=debug "$@"
	wait_for "$name metrics listener" 30 "${PIDS[$name]}" metrics_port "$name" || {
		stop "$name"
		return 2
	}
	wait_for "$name /readyz" 30 "${PIDS[$name]}" curl -fsS "http://127.0.0.1:$(metrics_port "$name")/readyz"
}

# restart_imagegate [ARG...]: stop the main imagegate and start it again on
# IMAGEGATE_PORT, the port the apiserver calls: with ARGs as serve_imagegate,
# without as start_imagegate.
restart_imagegate() {
	stop imagegate
	if (($#)); then serve_imagegate imagegate IMAGEGATE_PORT "$@"; else start_imagegate; fi ||
		die "imagegate: its port $IMAGEGATE_PORT was taken while it was down"
}

# start_controller_manager [CONTROLLER...]: kube-controller-manager against
# the main apiserver ($KUBECONFIG, as the e2e admin), running only the
# CONTROLLERs (default: the Job, ReplicaSet and Deployment controllers; no
# token controllers, so it needs no service-account key), with its health
# endpoint on a free loopback port. For the scenarios that need the real
# controllers; no kubelet runs, so a scenario sets pod phases itself
# through pods/NAME/status, which ImagePolicyWebhook does not review. Stop it
# with "stop kube-controller-manager" (the cleanup does too).
start_controller_manager() {
	local controllers
	(($#)) || set -- job-controller replicaset-controller deployment-controller
	controllers=$(printf '%s,' "$@")
	free_port KCM_PORT
	on_free_ports KCM_PORT -- start_kcm "${controllers%,}"
}

# start_kcm CONTROLLERS: start_controller_manager's start, on KCM_PORT.
start_kcm() {
	start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
		--kubeconfig="$KUBECONFIG" --leader-elect=false --controllers="$1" \
		--bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$WORK/kcm-certs" --v=2
	wait_for "kube-controller-manager /healthz" 60 "${PIDS[kube-controller-manager]}" \
		curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz" || {
		stop kube-controller-manager
		return 2
	}
}

# start_control_plane: the run's certificates, etcd, the main imagegate on
# IMAGEGATE_PORT, and the main kube-apiserver on APISERVER_PORT, which calls
# it through ImagePolicyWebhook and writes the audit log $AUDIT_LOG. Exports
# KUBECONFIG for it.
start_control_plane() {
	local cfg=$WORK/apiserver
	free_port ETCD_PORT ETCD_PEER_PORT APISERVER_PORT IMAGEGATE_PORT
	make_certs

	# imagegate before the apiserver's configuration, which names its port:
	# a port found taken at the first start is replaced (on_free_ports).
	on_free_ports ETCD_PORT ETCD_PEER_PORT -- start_etcd
	on_free_ports IMAGEGATE_PORT -- start_imagegate
	wire_image_policy_webhook "$cfg" "$IMAGEGATE_PORT"
	cp "$EXAMPLES/audit-policy.yaml" "$cfg/"
	TOKEN=$(openssl rand -hex 16)
	printf '%s,e2e-admin,e2e-admin,system:masters\n' "$TOKEN" >"$cfg/tokens.csv"
	AUDIT_LOG=$WORK/audit.log
	# (start_apiserver writes it.)
	export KUBECONFIG=$WORK/kubeconfig KUBECACHEDIR=$WORK/kube-cache
	on_free_ports APISERVER_PORT -- start_apiserver kube-apiserver APISERVER_PORT "$KUBECONFIG" \
		--enable-admission-plugins=ImagePolicyWebhook \
		--admission-control-config-file="$cfg/admission-config.yaml" \
		--audit-policy-file="$cfg/audit-policy.yaml" \
		--audit-log-path="$AUDIT_LOG"
	say "ports: etcd $ETCD_PORT/$ETCD_PEER_PORT, kube-apiserver $APISERVER_PORT, imagegate $IMAGEGATE_PORT"
}

# wire_image_policy_webhook DIR PORT [CLIENT]: the documented apiserver-side
# wiring of ImagePolicyWebhook from examples/apiserver/, copied into DIR and
# pointed at the imagegate on PORT; with CLIENT, through
# imagegate-kubeconfig-mtls.yaml, presenting the client certificate
# CLIENT.crt with its key CLIENT.key. Only paths, the URL and the cache TTLs
# change: short TTLs so that the apiserver's decision cache never answers
# for imagegate across checks. The apiserver then takes
# --admission-control-config-file=DIR/admission-config.yaml.
wire_image_policy_webhook() {
	local dir=$1 port=$2 client=${3-} kubeconfig=imagegate-kubeconfig${3:+-mtls}.yaml
	mkdir -p "$dir"
	cp "$EXAMPLES/admission-config.yaml" "$EXAMPLES/$kubeconfig" "$dir/"
	subst "$dir/admission-config.yaml" \
		"kubeConfigFile: /etc/kubernetes/imagegate/imagegate-kubeconfig.yaml" \
		"kubeConfigFile: $dir/$kubeconfig"
	subst "$dir/admission-config.yaml" "allowTTL: 50" "allowTTL: 1"
	subst "$dir/admission-config.yaml" "denyTTL: 50" "denyTTL: 1"
	grep -q '^ *defaultAllow: false' "$dir/admission-config.yaml" ||
		die "examples/apiserver/admission-config.yaml no longer says defaultAllow: false"
	subst "$dir/$kubeconfig" \
		"server: https://imagegate.example.internal:8443/image-policy" \
		"server: https://127.0.0.1:$port/image-policy"
	subst "$dir/$kubeconfig" \
		"certificate-authority: /etc/kubernetes/imagegate/ca.crt" \
		"certificate-authority: $WORK/pki/ca.crt"
	[[ -n $client ]] || return 0
	subst "$dir/$kubeconfig" \
		"client-certificate: /etc/kubernetes/imagegate/apiserver-client.crt" \
		"client-certificate: $client.crt"
	subst "$dir/$kubeconfig" \
		"client-key: /etc/kubernetes/imagegate/apiserver-client.key" \
		"client-key: $client.key"
}

# render_overlay VAR PORT [OVERLAY]: copy config/ and hack/e2e/OVERLAY/
# (default validating-overlay) into a new directory under $WORK, keeping
# their relative layout so the overlay's ../../../config resolves, fill in
# the webhooks' URL (imagegate on PORT) and the e2e CA in its *loopback.yaml
# patches, and set VAR to the overlay's directory.
render_overlay() {
	local dir name=${3:-validating-overlay} f
	dir=$(mktemp -d "$WORK/kustomize.XXXXXX")
	mkdir -p "$dir/hack/e2e"
	cp -R "$ROOT/config" "$dir/config"
	cp -R "$ROOT/hack/e2e/$name" "$dir/hack/e2e/"
	for f in "$dir/hack/e2e/$name/"*loopback.yaml; do
		subst "$f" E2E_IMAGEGATE_PORT "$2"
		subst "$f" E2E_CA_BUNDLE "$(base64 -w0 <"$WORK/pki/ca.crt")"
	done
	printf -v "$1" '%s' "$dir/hack/e2e/$name"
}

# expect_webhook KIND PATH PORT DESCRIPTION JQ-CONDITION [JQ-ARG...]: the
# stored KIND (validating or mutating) webhook configuration imagegate, as
# render_overlay wires it, has one webhook, PATH.imagegate.dev, calling
# https://127.0.0.1:PORT/PATH with the e2e CA, no Service, a 5 s timeout,
# and meeting JQ-CONDITION (with JQ-ARGs, such as --arg NAME VALUE).
expect_webhook() {
	local kind=$1 path=$2 port=$3 desc=$4 cond=$5
	shift 5
	kc get "${kind}webhookconfiguration" imagegate -o json
	if ((KC_RC == 0)) && jq -e --arg name "$path.imagegate.dev" --arg url "https://127.0.0.1:$port/$path" \
		--arg ca "$(base64 -w0 <"$WORK/pki/ca.crt")" "$@" '
			(.webhooks | length) == 1 and (.webhooks[0] |
			.name == $name and .clientConfig.url == $url and
			.clientConfig.caBundle == $ca and (.clientConfig | has("service") | not) and
			.timeoutSeconds == 5 and '"$cond"')' \
		<<<"$KC_OUT" >/dev/null; then
		pass "$desc"
	else
		fail "$desc" "$KC_OUT"
	fi
}
