#!/usr/bin/env bash
# Gives the in-cluster webhook (config/) its TLS material without cert-manager:
#   1. a throwaway CA and a serving certificate for imagegate.imagegate.svc
#      (hack/gen-certs.sh; existing files in CERT_DIR are kept),
#   2. the Secret imagegate-tls in namespace imagegate (the namespace is
#      created if `kubectl apply -k config/` has not run yet),
#   3. the CA as the caBundle of the ValidatingWebhookConfiguration imagegate,
#      once it exists (and of the MutatingWebhookConfiguration imagegate of
#      the mutating-webhook component, when it exists), and a wait for the
#      Deployment to be ready.
# Idempotent: run it after `kubectl apply -k config/`, and again whenever you
# like. Re-applying config/ keeps the caBundle, which no manifest sets.
#
# Usage: hack/webhook-certs.sh [CERT_DIR]    (default _output/webhook-certs)
# Environment: KUBECTL (default kubectl), NAMESPACE, SERVICE, SECRET,
# WEBHOOK_CONFIG, ROLLOUT_TIMEOUT (default 120s; 0 skips the wait).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=${1:-_output/webhook-certs}
kubectl=${KUBECTL:-kubectl}
ns=${NAMESPACE:-imagegate}
svc=${SERVICE:-imagegate}
secret=${SECRET:-imagegate-tls}
webhook=${WEBHOOK_CONFIG:-imagegate}
timeout=${ROLLOUT_TIMEOUT:-120s}

say() { printf 'webhook-certs: %s\n' "$*"; }

# The apiserver calls the Service by its cluster DNS name; the first SAN is
# also the certificate's CN.
hack/gen-certs.sh "$dir" "$svc.$ns.svc" "$svc.$ns.svc.cluster.local" "$svc.$ns" "$svc"

if ! "$kubectl" get namespace "$ns" >/dev/null 2>&1; then
  "$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f -
fi
"$kubectl" -n "$ns" create secret tls "$secret" --cert "$dir/tls.crt" --key "$dir/tls.key" \
  --dry-run=client -o yaml | "$kubectl" apply -f -
say "Secret $ns/$secret holds the serving certificate for $svc.$ns.svc"

if ! "$kubectl" get validatingwebhookconfiguration "$webhook" >/dev/null 2>&1; then
  say "no ValidatingWebhookConfiguration $webhook yet: run 'kubectl apply -k config/', then this script again to set its caBundle"
  exit 0
fi
ca=$(base64 <"$dir/ca.crt" | tr -d '\n')
# The validating configuration, and the mutating one when the
# mutating-webhook component installed it.
for kind in validatingwebhookconfiguration mutatingwebhookconfiguration; do
  if [ "$kind" = mutatingwebhookconfiguration ] && ! "$kubectl" get "$kind" "$webhook" >/dev/null 2>&1; then
    continue
  fi
  # One JSON patch operation per webhook in the configuration.
  count=$("$kubectl" get "$kind" "$webhook" -o jsonpath='{range .webhooks[*]}x{end}')
  ops=""
  for ((i = 0; i < ${#count}; i++)); do
    ops+="${ops:+,}{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$ca\"}"
  done
  "$kubectl" patch "$kind" "$webhook" --type=json -p "[$ops]"
  say "caBundle of $kind $webhook is the CA in $dir/ca.crt"
done

# Pods that started before the Secret existed pick it up on the kubelet's
# next mount retry; wait so the webhook is known to answer before returning.
if [ "$timeout" != 0 ] && "$kubectl" -n "$ns" get deployment "$svc" >/dev/null 2>&1; then
  "$kubectl" -n "$ns" rollout status deployment "$svc" --timeout "$timeout"
fi
