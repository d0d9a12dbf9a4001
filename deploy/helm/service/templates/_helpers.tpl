{{/* The service's name: every object is named after it, so the headless Service is the DNS
name the registry resolves, whatever the release is called. */}}
{{- define "service.name" -}}
{{- required "name: the service's name (services/<name>/) is required" .Values.name -}}
{{- end -}}

{{- define "service.labels" -}}
{{ include "service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: kfm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "service.image" -}}
{{- $repo := .Values.image.repository | default (printf "kfm/%s" (include "service.name" .)) -}}
{{- printf "%s:%s" $repo .Values.image.tag -}}
{{- end -}}

{{- define "service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "service.name" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The non-secret settings, as a map of environment variables: the ConfigMap's data and the
migration Job's env (a pre-install hook runs before the ConfigMap exists). */}}
{{- define "service.settings" -}}
{{- $settings := dict
  "SERVICE_NAME" (include "service.name" .)
  "ENVIRONMENT" .Values.environment
  "SERVICE_HOST" "0.0.0.0"
  "SERVICE_PORT" "8000"
  "KAFKA_BOOTSTRAP_SERVERS" .Values.kafka.bootstrapServers
  "KAFKA_TOPIC_REPLICATION_FACTOR" (toString .Values.kafka.topicReplicationFactor)
  "REGISTRY_BACKEND" "dns"
  "REGISTRY_DNS_TEMPLATE" .Values.registry.dnsTemplate
  "REGISTRY_DNS_NAMESPACE" .Release.Namespace
  "REGISTRY_DNS_PORT" "8000"
  "REGISTRY_DNS_SCHEME" "http"
  "REGISTRY_DNS_REFRESH" (toString .Values.registry.dnsRefreshSeconds)
-}}
{{- if .Values.jwksUrl }}
{{- $_ := set $settings "JWKS_URL" .Values.jwksUrl }}
{{- end }}
{{- if .Values.authTokenUrl }}
{{- $_ := set $settings "AUTH_TOKEN_URL" .Values.authTokenUrl }}
{{- end }}
{{- range $key, $value := .Values.config }}
{{- $_ := set $settings $key (toString $value) }}
{{- end }}
{{- toYaml $settings -}}
{{- end -}}

{{- define "service.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "service.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}
