{{/*
Helpers for the optional monitoring objects (podmonitor.yaml,
prometheusrule.yaml, dashboard-configmap.yaml; values: monitoring.*).
*/}}

{{/*
PromQL label matchers that select this release's agents: the
monitoring.prometheusRule.selector value, else the job label the
Prometheus Operator gives the PodMonitor's targets (<namespace>/<name>).
*/}}
{{- define "pylon.monitoringSelector" -}}
{{- if .Values.monitoring.prometheusRule.selector -}}
{{- .Values.monitoring.prometheusRule.selector -}}
{{- else -}}
{{- printf "job=%q" (printf "%s/%s" .Release.Namespace (include "pylon.fullname" .)) -}}
{{- end -}}
{{- end }}

{{/* Fails when a monitoring object would have nothing to scrape. */}}
{{- define "pylon.monitoringValidate" -}}
{{- if eq .Values.agent.shape "init" -}}
{{- fail "monitoring.podMonitor.enabled needs a serve sidecar (agent.shape nativeSidecar or classicSidecar): with agent.shape=init nothing serves /metrics after the pod starts" -}}
{{- end -}}
{{- end }}

{{/*
An alert's labels and the start of its annotations (the caller adds
summary and description): dict name, severity, docs, url, labels.
*/}}
{{- define "pylon.alertMeta" -}}
labels:
  severity: {{ .severity }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  {{- if .url }}
  runbook_url: {{ printf "%s#%s" .url (lower .name) }}
  {{- end }}
{{- end }}
