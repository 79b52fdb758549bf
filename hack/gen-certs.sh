#!/usr/bin/env bash
# Generates a throwaway CA and a serving certificate for imagegate, for local
# runs and tests only. Usage: hack/gen-certs.sh DIR [SAN...]
# SANs default to localhost, 127.0.0.1 and ::1; add the Service's DNS names
# (imagegate.imagegate.svc) for an in-cluster test. Existing files are kept.
set -euo pipefail

dir=${1:?usage: hack/gen-certs.sh DIR [SAN...]}
shift
sans=("$@")
[ ${#sans[@]} -gt 0 ] || sans=(localhost 127.0.0.1 ::1)

mkdir -p "$dir"
cd "$dir"
if [ -s tls.crt ] && [ -s tls.key ] && [ -s ca.crt ]; then
  echo "gen-certs: keeping the certificates in $dir"
  exit 0
fi

san_list=""
for s in "${sans[@]}"; do
  if [[ $s =~ ^[0-9.]+$ || $s == *:* ]]; then san_list+="IP:$s,"; else san_list+="DNS:$s,"; fi
done
san_list=${san_list%,}

umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=imagegate-throwaway-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=${sans[0]}" -keyout tls.key -out tls.csr 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$san_list") \
  -out tls.crt 2>/dev/null
rm -f tls.csr ca.srl
echo "gen-certs: wrote ca.crt, tls.crt and tls.key to $dir (SANs: $san_list, valid 30 days)"
