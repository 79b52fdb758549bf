{{/* Labels on every object: what config/kustomization.yaml's labels add. */}}
{{- define "imagegate.labels" -}}
app.kubernetes.io/name: imagegate
app.kubernetes.io/part-of: imagegate
{{- if .Values.helmLabels }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ include "imagegate.tag" . | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- end }}

{{/* The pods' selector; immutable once installed, so no release label. */}}
{{- define "imagegate.selectorLabels" -}}
app.kubernetes.io/name: imagegate
app.kubernetes.io/component: webhook
{{- end }}

{{- define "imagegate.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end }}

{{- define "imagegate.image" -}}
{{- $ref := .Values.image.repository -}}
{{- with include "imagegate.tag" . }}{{ $ref = printf "%s:%s" $ref . }}{{ end -}}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end -}}
{{- $ref -}}
{{- end }}

{{/* The Service's DNS names, which the serving certificate must carry. */}}
{{- define "imagegate.dnsNames" -}}
{{- list (printf "imagegate.%s.svc" .Release.Namespace) (printf "imagegate.%s.svc.cluster.local" .Release.Namespace) | toJson -}}
{{- end }}

{{/*
tls.source=generate: the CA and serving certificate, as a dict of PEMs.
Made once per render (cached in .Values, since every include would
otherwise generate anew), and taken from the Secret when the cluster has it,
so `helm upgrade` keeps them and the caBundle still matches.
*/}}
{{- define "imagegate.generatedTLS" -}}
{{- if not (hasKey .Values "__generatedTLS") -}}
{{- $pems := dict -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.tls.secretName -}}
{{- if and $secret (hasKey ($secret.data | default dict) "ca.crt") -}}
{{- $pems = dict "ca" (index $secret.data "ca.crt" | b64dec) "crt" (index $secret.data "tls.crt" | b64dec) "key" (index $secret.data "tls.key" | b64dec) -}}
{{- else -}}
{{- $ca := genCA "imagegate-webhook-ca" (int .Values.tls.validityDays) -}}
{{- $cert := genSignedCert (printf "imagegate.%s.svc" .Release.Namespace) nil (include "imagegate.dnsNames" . | fromJsonArray) (int .Values.tls.validityDays) $ca -}}
{{- $pems = dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "__generatedTLS" $pems -}}
{{- end -}}
{{- toJson (index .Values "__generatedTLS") -}}
{{- end }}

{{/* clientConfig.caBundle, or cert-manager's annotation, for both webhooks. */}}
{{- define "imagegate.caBundle" -}}
{{- if eq .Values.tls.source "generate" -}}
caBundle: {{ (include "imagegate.generatedTLS" . | fromJson).ca | b64enc }}
{{- end -}}
{{- end }}

{{- define "imagegate.webhookAnnotations" -}}
{{- if eq .Values.tls.source "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/imagegate
{{- end -}}
{{- end }}

{{- define "imagegate.namespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector -}}
{{- toYaml .Values.webhook.namespaceSelector }}
{{- else -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: [{{ range $i, $ns := prepend .Values.webhook.exemptNamespaces .Release.Namespace | uniq }}{{ if $i }}, {{ end }}{{ $ns | quote }}{{ end }}]
{{- end }}
{{- end }}

{{/* Both webhooks' rules: pods, and every object that makes pods. */}}
{{- define "imagegate.rules" -}}
- apiGroups: [""]
  apiVersions: ["v1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["pods", "replicationcontrollers", "podtemplates"]
  scope: Namespaced
# kubectl debug adds an ephemeral container to a running pod.
- apiGroups: [""]
  apiVersions: ["v1"]
  operations: ["UPDATE"]
  resources: ["pods/ephemeralcontainers"]
  scope: Namespaced
- apiGroups: ["apps"]
  apiVersions: ["v1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["deployments", "replicasets", "statefulsets", "daemonsets"]
  scope: Namespaced
- apiGroups: ["batch"]
  apiVersions: ["v1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["jobs", "cronjobs"]
  scope: Namespaced
{{- end }}

{{/*
The policy flags, shared by the Deployment and the audit CronJob so both
judge with the same policy. After every other serve flag: the kustomize
components append --registry-mirror and --config to the base's arguments.
*/}}
{{- define "imagegate.policyArgs" -}}
{{- with .Values.registryWhitelist }}
# Edit to your registries (comma-separated host[:port] or
# host[:port]/path). Add --mode=warn to observe before enforcing.
- --registry-whitelist={{ join "," . }}
{{- end }}
{{- with .Values.mode }}
- --mode={{ . }}
{{- end }}
{{- with .Values.registryMirrors }}
{{- $mirrors := list }}
{{- range . }}{{ $mirrors = append $mirrors (printf "%s=%s" .from .to) }}{{ end }}
- --registry-mirror={{ join "," $mirrors }}
{{- end }}
{{- if .Values.policy }}
- --config=/etc/imagegate/policy.yaml
{{- end }}
{{- with .Values.pinning }}
{{- if .enabled }}
{{- if not $.Values.mutatingWebhook.enabled }}
{{- fail "pinning.enabled needs mutatingWebhook.enabled: the mutating webhook (POST /mutate) is what pins digests" }}
{{- end }}
- --pin-digests
{{- end }}
{{- if .credentialsSecret }}
- --registry-credentials=/etc/imagegate-registry/credentials/config.json
{{- end }}
{{- if .caConfigMap }}
- --registry-ca-file=/etc/imagegate-registry/ca/ca.crt
{{- end }}
{{- with .timeout }}
- --registry-timeout={{ . }}
{{- end }}
{{- with .reviewTimeout }}
- --registry-review-timeout={{ . }}
{{- end }}
{{- with .cacheTTL }}
- --digest-cache-ttl={{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The mounts and volumes of what policyArgs names: the policy file, the
registry credentials and CAs; empty when none is set.
*/}}
{{- define "imagegate.policyVolumeMount" -}}
{{- if .Values.policy }}
- name: policy
  mountPath: /etc/imagegate
  readOnly: true
{{- end }}
{{- if .Values.pinning.credentialsSecret }}
- name: registry-credentials
  mountPath: /etc/imagegate-registry/credentials
  readOnly: true
{{- end }}
{{- if .Values.pinning.caConfigMap }}
- name: registry-ca
  mountPath: /etc/imagegate-registry/ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "imagegate.policyVolume" -}}
{{- if .Values.policy }}
- name: policy
  configMap:
    name: imagegate-policy
{{- end }}
{{- with .Values.pinning.credentialsSecret }}
# Mounted whole, not with subPath, so an update of the Secret reaches the
# file, which imagegate re-reads.
- name: registry-credentials
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- with .Values.pinning.caConfigMap }}
- name: registry-ca
  configMap:
    name: {{ . }}
{{- end }}
{{- end }}

{{/*
Pod Security "restricted", for every imagegate pod. fsGroup: the kubelet
writes Secret and ConfigMap files as root, so the files of the TLS and
registry Secrets (mode 0440) are readable by imagegate's group only with it.
*/}}
{{- define "imagegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "imagegate.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
