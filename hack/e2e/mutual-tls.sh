# shellcheck shell=bash
# Issue 6: caller authentication, both sides. imagegate runs with
# --client-ca-file and --allowed-client-names; an apiserver of its own (over
# this run's etcd under a fresh prefix, like the validating scenario) calls
# it through examples/apiserver/imagegate-kubeconfig-mtls.yaml as written,
# only its paths and URL changed, so the documented client certificate is
# what gets tested.
MTLS_RUNS=0
scenario_mutual_tls() {
	say "scenario: mutual TLS (--client-ca-file, --allowed-client-names) with the documented apiserver kubeconfig"
	MTLS_RUNS=$((MTLS_RUNS + 1))
	# port and ig_port are set and read by name (free_port, on_free_ports).
	# shellcheck disable=SC2034
	local port ig_port name
	local cfg=$WORK/apiserver-mtls pki=$WORK/pki-mtls
	local -x KUBECONFIG=$WORK/kubeconfig-mtls
	mkdir -p "$pki"
	# A client CA of its own, a certificate from it for the apiserver
	# (CN=kube-apiserver: allowed) and one for an intruder (CN=intruder).
	make_ca "$pki" client-ca imagegate-e2e-client-ca
	for name in kube-apiserver intruder; do make_cert "$pki/client-ca" clientAuth "$pki/$name" "$name"; done

	free_port port ig_port
	# serve_imagegate waits for /readyz the kubelet's way, on the plain
	# metrics listener: the HTTPS one now wants a client certificate.
	on_free_ports ig_port -- serve_imagegate imagegate-mtls ig_port \
		--tls-cert-file "$WORK/pki/imagegate.crt" --tls-key-file "$WORK/pki/imagegate.key" \
		--client-ca-file "$pki/client-ca.crt" --allowed-client-names kube-apiserver \
		--registry-whitelist "$REGISTRY"

	# imagegate's side, with curl.
	local url="https://127.0.0.1:$ig_port/readyz"
	expect_curl "no client certificate: refused at the TLS handshake" refused \
		--cacert "$WORK/pki/ca.crt" "$url"
	expect_curl "a certificate from the serving CA, not the client CA: refused at the TLS handshake" refused \
		--cacert "$WORK/pki/ca.crt" --cert "$WORK/pki/imagegate.crt" --key "$WORK/pki/imagegate.key" "$url"
	expect_curl "a client-CA certificate for CN=intruder (not in --allowed-client-names): refused at the TLS handshake" refused \
		--cacert "$WORK/pki/ca.crt" --cert "$pki/intruder.crt" --key "$pki/intruder.key" "$url"
	expect_curl "a client-CA certificate for CN=kube-apiserver is served" ok \
		--cacert "$WORK/pki/ca.crt" --cert "$pki/kube-apiserver.crt" --key "$pki/kube-apiserver.key" "$url"
	expect_metric "imagegate_client_auth_rejections_total counts the intruder" imagegate-mtls \
		'imagegate_client_auth_rejections_total{reason="name-not-allowed"}' 1

	# The apiserver's side: the documented files, pointed at this imagegate.
	wire_image_policy_webhook "$cfg" "$ig_port" "$pki/kube-apiserver"
	on_free_ports port -- start_apiserver kube-apiserver-mtls port "$KUBECONFIG" \
		--etcd-prefix="/registry-mtls-$MTLS_RUNS" \
		--enable-admission-plugins=ImagePolicyWebhook \
		--admission-control-config-file="$cfg/admission-config.yaml"
	# defaultAllow: false, so a pod is only created if imagegate answered.
	expect_created "the apiserver presents its client certificate: a pod with a $REGISTRY image is created" -- \
		run mtls-ok --image="$(fresh_image mtls)" --restart=Never
	expect_refused "the apiserver presents its client certificate: a docker.io image is refused with imagegate's reason" \
		'pods "mtls-hub" is forbidden' "$DENIED" "$(denied "e2e-$RUN_ID-mtls:1.0" 'is not allowed')" -- \
		run mtls-hub --image="e2e-$RUN_ID-mtls:1.0" --restart=Never
	stop kube-apiserver-mtls
	stop imagegate-mtls
}
