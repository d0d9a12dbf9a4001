{{/* Named "gateway" whatever the release: services and docs reach it by that name. */}}
{{- define "gateway.name" -}}gateway{{- end -}}

{{- define "gateway.labels" -}}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: kfm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default "gateway" -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Non-secret settings (gateway/config.py, core/config.py) as environment variables. */}}
{{- define "gateway.settings" -}}
{{- $settings := dict
  "SERVICE_NAME" "gateway"
  "ENVIRONMENT" .Values.environment
  "SERVICE_HOST" "0.0.0.0"
  "SERVICE_PORT" "8000"
  "GATEWAY_ROUTES_FILE" "/etc/kfm/gateway/routes.toml"
  "GATEWAY_WORKERS" (toString .Values.workers)
  "GATEWAY_TRUSTED_PROXIES" (toJson .Values.trustedProxies)
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
{{- if .Values.legacyUpstreamUrl }}
{{- $_ := set $settings "LEGACY_UPSTREAM_URL" .Values.legacyUpstreamUrl }}
{{- end }}
{{- range $key, $value := .Values.config }}
{{- $_ := set $settings $key (toString $value) }}
{{- end }}
{{- toYaml $settings -}}
{{- end -}}
