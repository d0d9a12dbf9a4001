{{- define "kafka.labels" -}}
{{ include "kafka.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: kfm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kafka.selectorLabels" -}}
app.kubernetes.io/name: kafka
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A pod's stable DNS name through the headless Service. */}}
{{- define "kafka.podHost" -}}
{{- printf "kafka-%d.kafka-headless.%s.svc.cluster.local" .index .namespace -}}
{{- end -}}

{{/* node.id@host:9093 for every pod: node N is pod kafka-N (the ordinal). */}}
{{- define "kafka.quorumVoters" -}}
{{- $voters := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $host := include "kafka.podHost" (dict "index" $i "namespace" $.Release.Namespace) -}}
{{- $voters = append $voters (printf "%d@%s:9093" $i $host) -}}
{{- end -}}
{{- join "," $voters -}}
{{- end -}}
