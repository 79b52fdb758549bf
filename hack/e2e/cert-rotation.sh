# shellcheck shell=bash
# Issue 3 §4, the certificate half: imagegate's serving certificate is
# replaced in place while pods keep being created through the apiserver,
# and no review fails. The apiserver's imagegate is restarted once with its
# certificate and key in a Secret-style volume (tls.crt and tls.key are
# symlinks through ..data), then, with one PID throughout, the volume is
# updated the kubelet's way (what a cert-manager renewal of the mounted
# Secret comes to) three times: to a new leaf from the same CA (gen2), to a
# broken one (gen3: a new certificate with gen2's key, which does not match
# it), and to another good one (gen4).
#
# Two streams run meanwhile, each request with an image no other used (so
# the apiserver's decision cache never answers), alternately one imagegate
# allows and one it denies:
#   - pod creations through the apiserver (server-side dry run: admission
#     runs, nothing is stored), one at a time. The apiserver keeps its one
#     keep-alive connection to imagegate (seen with ss), opened before the
#     rotation, so these show that a rotation disturbs no connection in
#     use; they cannot show a new handshake.
#   - ImageReviews posted straight to imagegate by curl, one new TLS
#     connection each, verified against the e2e CA: these show that every
#     handshake during the rotation gets a certificate the caller trusts,
#     and which one it got.
# Every request must get imagegate's own decision: a backend error (which
# defaultAllow: false turns into a refusal without imagegate's reason) or a
# failed handshake counts as a failure.
ROTATION_RUNS=0
BG_PIDS=()
scenario_cert_rotation() {
	say "scenario: the serving certificate rotated in place (kubelet Secret update) under a stream of pod creations"
	ROTATION_RUNS=$((ROTATION_RUNS + 1))
	local dir=$WORK/serving-$ROTATION_RUNS gen=$WORK/rotation-$ROTATION_RUNS
	local out=$WORK/rotation-$ROTATION_RUNS/results stop=$WORK/rotation-$ROTATION_RUNS/stop
	local pid reviews0 handshakes0 failures0 t_first t_last load_pids g n
	mkdir -p "$dir" "$gen" "$out"
	# ECDSA P-256 keys: quick to make.
	for g in gen1 gen2 gen3 gen4; do
		make_cert "$WORK/pki/ca" serverAuth "$gen/$g/tls" "imagegate-$g" -newkey ec -pkeyopt ec_paramgen_curve:P-256
	done
	# gen3: a renewal whose key did not come along.
	cp "$gen/gen2/tls.key" "$gen/gen3/tls.key"

	kubelet_update "$dir" "$gen/gen1/tls.crt" "$gen/gen1/tls.key"
	restart_imagegate --tls-cert-file "$dir/tls.crt" --tls-key-file "$dir/tls.key" "${FLAG_POLICY[@]}"
	pid=${PIDS[imagegate]}
	expect_served "imagegate serves gen1 from the Secret-style volume" "$gen/gen1/tls.crt"

	reviews0=$(image_policy_reviews)
	handshakes0=$(metric imagegate imagegate_tls_handshake_failures_total)
	failures0=$(metric imagegate 'imagegate_certificate_reload_failures_total{certificate="serving"}')
	rm -f "$stop"
	: >"$out/apiserver"
	: >"$out/direct"
	rotation_load_apiserver "$out/apiserver" "$stop" &
	BG_PIDS+=($!)
	load_pids=($!)
	rotation_load_direct "$out/direct" "$stop" &
	BG_PIDS+=($!)
	load_pids+=($!)
	await_results "before the rotation" "$out" 20

	# gen2: a good renewal.
	t_first=$EPOCHREALTIME
	kubelet_update "$dir" "$gen/gen2/tls.crt" "$gen/gen2/tls.key"
	mark "$out" "gen2 written"
	await_served "after the kubelet update to gen2, new connections get gen2" "$gen/gen2/tls.crt"
	mark "$out" "gen2 served"
	await_results "with gen2" "$out" 20

	# gen3: broken, gen2 stays.
	kubelet_update "$dir" "$gen/gen3/tls.crt" "$gen/gen3/tls.key"
	mark "$out" "gen3 (broken) written"
	await_metric "the broken gen3 is counted as a failed certificate reload" imagegate \
		'imagegate_certificate_reload_failures_total{certificate="serving"}' $((failures0 + 1))
	expect_log "imagegate logged why gen3 is not used and that it keeps the previous certificate" imagegate \
		'.msg == "new serving certificate is not usable; keeping the previous one" and (.err | test("private key does not match"))'
	expect_served "after the broken update, new connections still get gen2" "$gen/gen2/tls.crt"
	await_results "with gen3 refused" "$out" 20

	# gen4: good again.
	kubelet_update "$dir" "$gen/gen4/tls.crt" "$gen/gen4/tls.key"
	mark "$out" "gen4 written"
	await_served "after the kubelet update to gen4, new connections get gen4" "$gen/gen4/tls.crt"
	mark "$out" "gen4 served"
	t_last=$EPOCHREALTIME
	await_results "with gen4" "$out" 20
	touch "$stop"
	wait "${load_pids[@]}"

	rotation_report "$out" "$t_first" "$t_last" "$gen"
	n=$(($(image_policy_reviews) - reviews0))
	local sent=$(($(wc -l <"$out/apiserver") + $(wc -l <"$out/direct")))
	if ((n == sent)); then
		pass "imagegate answered exactly one review per request ($n): the apiserver retried none"
	else
		fail "imagegate answered exactly one review per request" "imagegate counted $n reviews for $sent requests"
	fi
	expect_metric "no TLS handshake with imagegate failed during the rotation" imagegate \
		imagegate_tls_handshake_failures_total "$handshakes0"
	if [[ ${PIDS[imagegate]-} == "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		pass "imagegate kept PID $pid through the rotation (no restart)"
	else
		fail "imagegate kept PID $pid through the rotation (no restart)" "now ${PIDS[imagegate]-none}"
	fi

	restart_imagegate
}

# cert_id CERT-FILE, or on stdin: its serial, subject and SHA-256
# fingerprint, on one line.
cert_id() {
	openssl x509 -noout -serial -subject -fingerprint -sha256 ${1:+-in "$1"} 2>/dev/null | paste -sd ' '
}

# served_cert_id: cert_id of the certificate imagegate serves to a new
# connection, verified against the e2e CA; empty when the handshake fails.
served_cert_id() {
	openssl s_client -connect "127.0.0.1:$IMAGEGATE_PORT" -CAfile "$WORK/pki/ca.crt" \
		-verify_return_error </dev/null 2>/dev/null | cert_id
}

# expect_served DESCRIPTION CERT-FILE: a new connection gets CERT-FILE.
# await_served: the same, waiting up to 10 s.
expect_served() { served_check 0 "$@"; }
await_served() { served_check 10 "$@"; }
served_check() {
	local timeout=$1 desc=$2 want got start=$EPOCHREALTIME
	want=$(cert_id "$3")
	while got=$(served_cert_id) && [[ $got != "$want" ]] && (($(elapsed_ms "$start") < timeout * 1000)); do
		sleep 0.05
	done
	if [[ $got == "$want" ]]; then
		if ((timeout > 0)); then desc+=" after $(elapsed_ms "$start") ms"; fi
		pass "$desc"
		printf '%s\n' "$got" | indent
	else
		fail "$desc" "want: $want"$'\n'"got:  ${got:-(no certificate: the handshake failed)}"
	fi
}

# image_policy_reviews: ImageReviews imagegate has answered, every decision.
image_policy_reviews() {
	curl -fsS "http://127.0.0.1:$(metrics_port imagegate)/metrics" |
		awk '/^imagegate_reviews_total\{.*endpoint="image-policy"/ { n += $2 } END { print n + 0 }'
}

# mark DIR TEXT: note in DIR/marks when TEXT happened, for rotation_report.
mark() { printf '%s %s\n' "$EPOCHREALTIME" "$2" >>"$1/marks"; }

# await_results DESCRIPTION DIR N: both streams log N more results in DIR,
# so that each phase of the rotation really had requests in flight. Gives up
# (failing) after 60 s.
await_results() {
	local desc=$1 dir=$2 n=$3 a0 d0 start=$SECONDS
	a0=$(wc -l <"$dir/apiserver")
	d0=$(wc -l <"$dir/direct")
	while (($(wc -l <"$dir/apiserver") < a0 + n)) || (($(wc -l <"$dir/direct") < d0 + n)); do
		if ((SECONDS - start >= 60)); then
			fail "$n more requests of each stream $desc within 60s" \
				"apiserver: $(wc -l <"$dir/apiserver") direct: $(wc -l <"$dir/direct")"
			return 0
		fi
		sleep 0.1
	done
}

# rotation_load_apiserver OUT STOP: until file STOP exists, create pods in
# default through the apiserver with curl (server-side dry run), one at a
# time, alternately with an image imagegate allows and one it denies, each
# image new. One line per request to OUT: "TIME N want got DETAIL", got
# being allowed, denied (with imagegate's reason) or FAILED.
rotation_load_apiserver() {
	local out=$1 stop=$2 i=0 image want got res code msg
	while [[ ! -e $stop ]]; do
		i=$((i + 1))
		if ((i % 2)); then
			want=allowed image=$REGISTRY/e2e-$RUN_ID-rot-$i:1.0
		else
			want=denied image=e2e-$RUN_ID-rot-$i:1.0
		fi
		res=$(curl -sS --max-time 60 --cacert "$WORK/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
			-H 'Content-Type: application/json' -w '\n%{http_code}' \
			--data-binary '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"rot-'"$i"'"},"spec":{"containers":[{"name":"c","image":"'"$image"'"}]}}' \
			"https://127.0.0.1:$APISERVER_PORT/api/v1/namespaces/default/pods?dryRun=All" 2>&1) || true
		code=${res##*$'\n'} msg=${res%$'\n'*}
		got=FAILED
		if [[ $want == allowed && $code == 201 ]]; then
			got=allowed msg=
		elif [[ $code == 403 && $msg == *"${DENIED}image \\\"$image\\\": registry docker.io is not allowed"* ]]; then
			got=denied msg=
		fi
		printf '%s %d %s %s %s\n' "$EPOCHREALTIME" "$i" "$want" "$got" "${msg//$'\n'/ }" >>"$out"
	done
}

# rotation_load_direct OUT STOP: the same, as ImageReviews posted straight
# to imagegate, a new curl (so a new TLS connection, verified against the
# e2e CA) each; DETAIL is the subject of the certificate it was served.
rotation_load_direct() {
	local out=$1 stop=$2 i=0 image want got res subject
	while [[ ! -e $stop ]]; do
		i=$((i + 1))
		if ((i % 2)); then
			want=allowed image=$REGISTRY/e2e-$RUN_ID-rot-direct-$i:1.0
		else
			want=denied image=e2e-$RUN_ID-rot-direct-$i:1.0
		fi
		res=$(curl -sS -v --max-time 60 --cacert "$WORK/pki/ca.crt" -H 'Content-Type: application/json' \
			--data-binary '{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"'"$image"'"}],"namespace":"default"}}' \
			"https://127.0.0.1:$IMAGEGATE_PORT/image-policy" 2>&1) || true
		subject=none
		[[ $res =~ subject:\ CN=([^[:space:],]+) ]] && subject=${BASH_REMATCH[1]}
		got=FAILED
		if [[ $want == allowed && $res == *'"allowed":true'* ]]; then
			got=allowed
		elif [[ $want == denied && $res == *'"allowed":false'* && $res == *'registry docker.io is not allowed'* ]]; then
			got=denied
		fi
		if [[ $got == FAILED ]]; then
			printf '%s %d %s %s %s\n' "$EPOCHREALTIME" "$i" "$want" "$got" "$subject $(grep -v '^[*>}{<]' <<<"$res" | tr '\n' ' ')" >>"$out"
		else
			printf '%s %d %s %s %s\n' "$EPOCHREALTIME" "$i" "$want" "$got" "$subject" >>"$out"
		fi
	done
}

# rotation_report DIR T-FIRST T-LAST GENDIR: the checks on both streams'
# results, and what went through during the rotation (from T-FIRST, the
# first update, to T-LAST, when the last certificate was served).
rotation_report() {
	local dir=$1 t0=$2 t1=$3 gen=$4 s total bad during
	say "rotation timeline: $(awk -v t0="$t0" '{ printf "%+.2fs %s; ", $1 - t0, substr($0, index($0, " ") + 1) }' "$dir/marks")"
	for s in apiserver direct; do
		total=$(wc -l <"$dir/$s")
		bad=$(awk '$4 == "FAILED"' "$dir/$s")
		during=$(awk -v t0="$t0" -v t1="$t1" '$1 >= t0 && $1 <= t1' "$dir/$s" | wc -l)
		local what="pod creations through the apiserver"
		[[ $s == direct ]] && what="ImageReviews straight to imagegate, each on a new TLS connection"
		say "$s: $total $what, $during of them during the rotation ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s); by outcome: $(awk '{ print $4 }' "$dir/$s" | sort | uniq -c | tr -s ' \n' ' ')"
		if [[ -z $bad ]] && ((during > 0)); then
			pass "every one of the $total $what got imagegate's decision (allowed or denied as expected), $during during the rotation"
		else
			fail "every one of the $total $what got imagegate's decision, some during the rotation" \
				"$during during the rotation; $(wc -l <<<"$bad") failed, the first ones:"$'\n'"$(head -n 5 <<<"$bad")"
		fi
	done
	# Which certificate each direct connection was served, in order of
	# completion: gen1, then gen2, then gen4; never gen3.
	local seen
	seen=$(awk '{ print $5 }' "$dir/direct" | uniq | paste -sd ' ')
	if [[ $seen =~ ^imagegate-gen1(\ imagegate-gen2)+(\ imagegate-gen4)+$ || $seen == "imagegate-gen1 imagegate-gen2 imagegate-gen4" ]]; then
		pass "the direct connections were served gen1, then gen2, then gen4, never the broken gen3: $(awk '{ print $5 }' "$dir/direct" | uniq -c | tr -s ' \n' ' ')"
	else
		fail "the direct connections were served gen1, then gen2, then gen4, never the broken gen3" "in order: $seen"
	fi
}
