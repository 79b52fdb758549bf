#!/usr/bin/env bash
# Load test: imagegate against the floor, over TLS on loopback, with vegeta.
#
# It builds imagegate, the floor (hack/floor: a do-nothing TLS server that
# reads each review, decodes its JSON and answers a constant "allowed") and
# the helper hack/loadgen, makes a throwaway certificate, and then:
#
#   1. execs each server and times exec -> first 200 from /healthz
#      (loadgen start), then reads its idle RSS;
#   2. saturates each in turn, BENCH_ROUNDS times alternately: as many
#      reviews as BENCH_WORKERS in-flight requests get answered (medians, and
#      the median of the rounds' ratios, go in the table);
#   3. sends each a mixed set of reviews (ImageReviews of 1-5 containers and
#      AdmissionReviews of Deployments; ~80% admitted, some by break-glass)
#      at fixed rates (BENCH_RATES) with vegeta, an open-model generator that
#      keeps to the schedule whatever the answers' latency, so slow answers
#      are not hidden (no coordinated omission);
#   4. reads each one's peak RSS (VmHWM in /proc/PID/status);
#   5. floods imagegate with BENCH_FLOOD_IMAGES distinct image names and
#      reads its RSS again: its cache must stay bounded.
#
# It then prints one table (also saved, with every vegeta report, under
# _output/loadtest/<time>/). Every request goes to 127.0.0.1; every phase is
# bounded in time; the servers are stopped at the end, also on failure.
#
# With BENCH_PIN=1 (the default on 2 or more CPUs) the server runs on CPU 0
# and vegeta on CPU 1, so the server's figures are per core and the load
# generator does not steal its CPU.
#
# Settings (environment): BENCH_DURATION (10s per phase), BENCH_RATES
# ("2000 5000"), BENCH_WORKERS (64), BENCH_FLOOD_IMAGES (1000000; 0 skips),
# BENCH_PIN, BENCH_IMAGEGATE_ARGS (extra serve flags), BENCH_PPROF=1 (save a
# CPU profile of imagegate's saturation phase, via --enable-pprof).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
RATES=${BENCH_RATES:-2000 5000}
WORKERS=${BENCH_WORKERS:-64}
ROUNDS=${BENCH_ROUNDS:-3}
# At a fixed rate vegeta starts a worker per request in flight. Past the
# server's 250 concurrent HTTP/2 streams Go's client dials more connections,
# which costs both ends more than the reviews: keep under it. A server that
# falls behind then shows as an achieved rate below the target.
RATE_WORKERS=${BENCH_RATE_WORKERS:-200}
FLOOD_IMAGES=${BENCH_FLOOD_IMAGES:-1000000}
FLOOD_PER_REVIEW=50
PIN=${BENCH_PIN:-$([[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null && echo 1 || echo 0)}
OUT="$ROOT/_output/loadtest/$(date +%Y%m%d-%H%M%S)"
WORK="$OUT/work"
mkdir -p "$WORK"

log() { printf '[bench] %s\n' "$*" >&2; }

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT

on_cpu() { # on_cpu N CMD...: run CMD on CPU N when pinning
	local cpu=$1
	shift
	if [[ $PIN == 1 ]]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

free_port() {
	local port
	for port in $(seq "$1" $(($1 + 100))); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
	log "no free port from $1"
	exit 1
}

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# ---------------------------------------------------------------- build
TOOLS=$(hack/install-bench-tools.sh)
VEGETA="$TOOLS/vegeta"
log "building imagegate, floor and loadgen"
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$WORK/imagegate" ./cmd/imagegate
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$WORK/floor" ./hack/floor
go build -o "$WORK/loadgen" ./hack/loadgen
# An ECDSA P-256 certificate, as cert-manager issues by default: connections
# are kept alive, but when a stall makes the client open more, an RSA
# handshake per connection would cost the server more than the reviews.
mkdir -p "$WORK/certs"
(
	cd "$WORK/certs"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
		-keyout ca.key -out ca.crt 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 -keyout tls.key -out tls.csr 2>/dev/null
	openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out tls.crt \
		-extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') 2>/dev/null
)
CA="$WORK/certs/ca.crt"

# A realistic policy: a private registry, upstream projects on quay.io, one
# Docker Hub image, no latest, audited break-glass, denials logged at info.
# shellcheck disable=SC2054 # the commas separate the flag's list
IMAGEGATE_FLAGS=(--registry-whitelist registry.my.com,quay.io/prometheus,docker.io/library/busybox
	--reject-latest --allow-break-glass --log-level info)
# shellcheck disable=SC2206 # word splitting is the point
IMAGEGATE_FLAGS+=(${BENCH_IMAGEGATE_ARGS:-})

declare -A R # results, by "server.key"

# Fields of a "loadgen report" line: requests throughput success p50 p99 max failed errors.
field() { awk -v n="$2" '{print $n}' <<<"$1"; }

attack() { # attack NAME TARGETS VEGETA-ARGS...: run, report, print "loadgen report" fields
	local name=$1 targets=$2
	shift 2
	on_cpu 1 "$VEGETA" attack -targets="$targets" -format=json -root-certs="$CA" -timeout=5s \
		-max-body=0 -name="$name" "$@" >"$OUT/$name.bin"
	"$VEGETA" report -type=json "$OUT/$name.bin" >"$OUT/$name.json"
	"$VEGETA" report "$OUT/$name.bin" >"$OUT/$name.txt"
	rm -f "$OUT/$name.bin"
	"$WORK/loadgen" report "$OUT/$name.json"
}

# start NAME PORT CMD...: exec a server on CPU 0, time it to ready, read its
# idle RSS.
start() {
	local name=$1 port=$2
	shift 2
	local base="https://127.0.0.1:$port" pid ready
	R[$name.base]=$base
	"$WORK/loadgen" targets -url "$base" -n 2000 >"$WORK/$name.targets"
	log "$name: starting on $base"
	read -r pid ready < <(on_cpu 0 "$WORK/loadgen" start -ready "$base/healthz" -cacert "$CA" \
		-log "$OUT/$name.log" -- "$@")
	if [[ -z ${pid:-} ]]; then
		log "$name did not start; its log:"
		cat "$OUT/$name.log" >&2 || true
		exit 1
	fi
	PIDS+=("$pid")
	R[$name.pid]=$pid
	R[$name.ready]=$ready
	sleep 1
	R[$name.idle]=$(mib "$(kib "$pid" VmRSS)")
	log "$name: pid $pid, ready in $ready ms, idle RSS ${R[$name.idle]} MiB"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
port=$(free_port 18443)
METRICS_PORT=$(free_port 18543)
IMAGEGATE_FLAGS+=(--metrics-listen "127.0.0.1:$METRICS_PORT")
[[ ${BENCH_PPROF:-0} == 0 ]] || IMAGEGATE_FLAGS+=(--enable-pprof)
start imagegate "$port" "$WORK/imagegate" serve --listen "127.0.0.1:$port" \
	--tls-cert-file "$WORK/certs/tls.crt" --tls-key-file "$WORK/certs/tls.key" "${IMAGEGATE_FLAGS[@]}"
port=$(free_port 19443)
start floor "$port" "$WORK/floor" --listen "127.0.0.1:$port" \
	--tls-cert-file "$WORK/certs/tls.crt" --tls-key-file "$WORK/certs/tls.key"
SERVERS=(imagegate floor)

for name in "${SERVERS[@]}"; do
	attack "$name-warmup" "$WORK/$name.targets" -rate=1000/s -duration=2s >/dev/null
done

# Saturation first: it is closed-loop (WORKERS requests in flight, each sent
# when one is answered), so it never leaves a backlog behind. The two servers
# take turns, ROUNDS times, so that whatever else the machine does weighs on
# both alike; the table gives the medians, and the median of each round's
# ratio.
ratios=""
for round in $(seq "$ROUNDS"); do
	for name in "${SERVERS[@]}"; do
		sleep 2
		if [[ $name == imagegate && $round == 1 && ${BENCH_PPROF:-0} != 0 ]]; then
			# A CPU profile of a saturation phase, for go tool pprof.
			curl -sS -o "$OUT/imagegate-saturation.cpu.pprof" \
				"http://127.0.0.1:$METRICS_PORT/debug/pprof/profile?seconds=$((${DURATION%s} - 1))" &
		fi
		line=$(attack "$name-saturation-$round" "$WORK/$name.targets" -rate=0 -max-workers="$WORKERS" -duration="$DURATION")
		wait
		R[$name.sat.$round]=$line
		log "$name at saturation, round $round: $line"
	done
	ratios+=" $(awk -v a="$(field "${R[imagegate.sat.$round]}" 2)" -v b="$(field "${R[floor.sat.$round]}" 2)" 'BEGIN {if (b > 0) printf "%.3f", a / b}')"
done
for name in "${SERVERS[@]}"; do
	rps="" errs=0
	for round in $(seq "$ROUNDS"); do
		rps+=" $(field "${R[$name.sat.$round]}" 2)"
		errs=$((errs + $(field "${R[$name.sat.$round]}" 7)))
	done
	R[$name.sat]=$(median <<<"$rps")
	R[$name.sat.all]=${rps# }
	R[$name.sat.errors]=$errs
done
R[ratio]=$(median <<<"$ratios")
R[ratio.all]=${ratios# }

# Then the fixed rates, lowest first: a rate beyond capacity queues work that
# would spoil whatever ran after it.
for rate in $RATES; do
	for name in "${SERVERS[@]}"; do
		sleep 2
		line=$(attack "$name-rate-$rate" "$WORK/$name.targets" -rate="$rate/s" -duration="$DURATION" -max-workers="$RATE_WORKERS")
		R[$name.rate.$rate]=$line
		log "$name at $rate/s: $line"
	done
done
for name in "${SERVERS[@]}"; do
	R[$name.hwm]=$(mib "$(kib "${R[$name.pid]}" VmHWM)")
	log "$name: peak RSS ${R[$name.hwm]} MiB"
done

if [[ $FLOOD_IMAGES -gt 0 ]]; then
	log "imagegate: flood of $FLOOD_IMAGES distinct images ($FLOOD_PER_REVIEW per review)"
	flood_start=$SECONDS
	line=$("$WORK/loadgen" flood -url "${R[imagegate.base]}" -images "$FLOOD_IMAGES" -per-review "$FLOOD_PER_REVIEW" |
		attack imagegate-flood stdin -lazy -rate=0 -max-workers=8 -duration=180s)
	R[flood]=$line
	R[flood.secs]=$((SECONDS - flood_start))
	R[flood.rss]=$(mib "$(kib "${R[imagegate.pid]}" VmRSS)")
	R[flood.hwm]=$(mib "$(kib "${R[imagegate.pid]}" VmHWM)")
	log "imagegate flood: $line; RSS ${R[flood.rss]} MiB, peak ${R[flood.hwm]} MiB"
fi

# The load test's own server and vegeta count in this one.
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for name in "${SERVERS[@]}"; do
	kill "${R[$name.pid]}"
done
sleep 1

# ---------------------------------------------------------------- table
latency() { # latency LINE: "p50 / p99 / max ms (N errors)"
	local failed
	failed=$(field "$1" 7)
	printf '%s / %s / %s ms' "$(field "$1" 4)" "$(field "$1" 5)" "$(field "$1" 6)"
	[[ $failed == 0 ]] || printf ' (%s errors)' "$failed"
}
sat() { # sat LINE: "N/s (M errors)"
	printf '%s' "$(field "$1" 2)"
	[[ $(field "$1" 7) == 0 ]] || printf ' (%s errors)' "$(field "$1" 7)"
}

table() {
	local rate
	echo "| measure | imagegate | floor | imagegate / floor |"
	echo "|---|---|---|---|"
	sat_cell() { printf '%.0f' "${R[$1.sat]}"; [[ ${R[$1.sat.errors]} == 0 ]] || printf ' (%s errors)' "${R[$1.sat.errors]}"; }
	echo "| reviews/s at saturation, median of $ROUNDS alternating rounds ($WORKERS in flight, $DURATION each) | $(sat_cell imagegate) | $(sat_cell floor) | $(printf '%.2f' "${R[ratio]}") |"
	echo "| each round | ${R[imagegate.sat.all]} | ${R[floor.sat.all]} | ${R[ratio.all]} |"
	for rate in $RATES; do
		echo "| p50 / p99 / max at $rate reviews/s ($DURATION) | $(latency "${R[imagegate.rate.$rate]}") | $(latency "${R[floor.rate.$rate]}") | |"
	done
	echo "| peak RSS (VmHWM) | ${R[imagegate.hwm]} MiB | ${R[floor.hwm]} MiB | |"
	echo "| idle RSS, 1 s after ready | ${R[imagegate.idle]} MiB | ${R[floor.idle]} MiB | |"
	echo "| exec to ready (first 200 from /healthz) | ${R[imagegate.ready]} ms | ${R[floor.ready]} ms | |"
	if [[ -n ${R[flood]:-} ]]; then
		local ok images
		ok=$(awk '{print $1 - $7}' <<<"${R[flood]}")
		images=$((ok * FLOOD_PER_REVIEW))
		((images <= FLOOD_IMAGES)) || images=$FLOOD_IMAGES
		# A lazy attack ends with one "no targets" result per worker, which
		# are not reviews: count failures as reviews sent but not answered 200.
		local expected=$(((FLOOD_IMAGES + FLOOD_PER_REVIEW - 1) / FLOOD_PER_REVIEW))
		echo "| flood: $images distinct images in $ok reviews (${R[flood.secs]} s, $((expected - ok)) errors): RSS after / peak | ${R[flood.rss]} / ${R[flood.hwm]} MiB | | |"
	fi
}

{
	echo
	echo "imagegate load test, $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average before: $LOAD_BEFORE, after: $LOAD_AFTER (with the load test's own)"
	echo "pinning: $([[ $PIN == 1 ]] && echo 'server on CPU 0, vegeta on CPU 1' || echo 'none')"
	echo "load: vegeta $(awk '{print $1}' "$TOOLS/vegeta.version" 2>/dev/null || true), HTTP/2 over TLS 1.3 (ECDSA P-256), 2000 distinct reviews (70% ImageReview, 30% AdmissionReview of a Deployment)"
	echo
	table
} | tee "$OUT/table.md"
log "reports in $OUT"
