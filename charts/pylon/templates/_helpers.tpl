{{/*
Helpers for the pylon chart.  Every value is used through these so the
Deployment, Role and NOTES agree on names, labels and the agent's wiring.
*/}}

{{- define "pylon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, or the release name when it already contains the
chart name.  With bluegreen.enabled the colour is part of it, so two
releases of one app never collide.
*/}}
{{- define "pylon.fullname" -}}
{{- $name := "" }}
{{- if .Values.fullnameOverride }}
{{- $name = .Values.fullnameOverride }}
{{- else }}
{{- $base := default .Chart.Name .Values.nameOverride }}
{{- if contains $base .Release.Name }}
{{- $name = .Release.Name }}
{{- else }}
{{- $name = printf "%s-%s" .Release.Name $base }}
{{- end }}
{{- end }}
{{- if and .Values.bluegreen.enabled (not (hasSuffix (printf "-%s" .Values.bluegreen.colour) $name)) }}
{{- $name = printf "%s-%s" $name .Values.bluegreen.colour }}
{{- end }}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pylon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The app name shared by every colour: appName, else the release name (minus
a trailing -<colour> with bluegreen.enabled).
*/}}
{{- define "pylon.appName" -}}
{{- if .Values.appName }}
{{- .Values.appName | trunc 63 | trimSuffix "-" }}
{{- else if .Values.bluegreen.enabled }}
{{- trimSuffix (printf "-%s" .Values.bluegreen.colour) .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pylon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pylon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Values.bluegreen.enabled }}
pylon.dev/colour: {{ .Values.bluegreen.colour }}
{{- end }}
{{- end }}

{{- define "pylon.labels" -}}
helm.sh/chart: {{ include "pylon.chart" . }}
{{ include "pylon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "pylon.appName" . }}
pylon.dev/app: {{ include "pylon.appName" . }}
{{- end }}

{{- define "pylon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pylon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The channel namespace: agent.namespace, else the app name. */}}
{{- define "pylon.agentNamespace" -}}
{{- default (include "pylon.appName" .) .Values.agent.namespace }}
{{- end }}

{{/* The --app-selector: explicit, else pylon.dev/app=<appName> for blue/green. */}}
{{- define "pylon.appSelector" -}}
{{- if .Values.agent.appSelector }}
{{- .Values.agent.appSelector }}
{{- else if .Values.bluegreen.enabled }}
{{- printf "pylon.dev/app=%s" (include "pylon.appName" .) }}
{{- end }}
{{- end }}

{{- define "pylon.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "pylon.agentImage" -}}
{{- printf "%s:%s" .Values.agent.image.repository (.Values.agent.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where the agent image keeps its relocatable bundle (agent/Dockerfile). */}}
{{- define "pylon.agentBundleDir" -}}/opt/pylon-agent{{- end }}
{{- define "pylon.agentBin" -}}/opt/pylon-agent/bin/pylon-agent{{- end }}
{{- define "pylon.sharedDir" -}}/pylon-agent{{- end }}
{{- define "pylon.envFile" -}}/pylon-agent/cluster.env{{- end }}
{{- define "pylon.redisDir" -}}/var/run/secrets/pylon-agent/redis{{- end }}
{{- define "pylon.redisCADir" -}}/var/run/secrets/pylon-agent/redis-ca{{- end }}

{{/* "true" when more than one Pylon may serve this app at once. */}}
{{- define "pylon.multiPeer" -}}
{{- $max := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}
{{- $max = int .Values.autoscaling.maxReplicas }}
{{- end }}
{{- if or (gt $max 1) .Values.bluegreen.enabled (gt (int .Values.agent.minPeers) 1) }}true{{- end }}
{{- end }}

{{/* Fails the render on inconsistent values, with what to do. */}}
{{- define "pylon.validate" -}}
{{- if not (has .Values.agent.shape (list "nativeSidecar" "init" "classicSidecar")) }}
{{- fail (printf "agent.shape %q is not one of nativeSidecar, init, classicSidecar" .Values.agent.shape) }}
{{- end }}
{{- if and (include "pylon.multiPeer" .) (ne .Values.agent.mode "noop") (not .Values.redis.existingSecret) }}
{{- fail "redis.existingSecret is required: more than one Pylon can serve this app (replicaCount > 1, autoscaling, blue/green or agent.minPeers > 1); create a Secret holding the Redis URL (kubectl create secret generic pylon-redis --from-literal=url=redis://...) and set redis.existingSecret=pylon-redis" }}
{{- end }}
{{- if and (include "pylon.multiPeer" .) (not .Values.database.existingSecret) }}
{{- fail "database.existingSecret is required: more than one Pylon can serve this app (replicaCount > 1, autoscaling or blue/green) and they need one Postgres; create a Secret holding DATABASE_URL (kubectl create secret generic pylon-db --from-literal=url=postgres://...) and set database.existingSecret=pylon-db" }}
{{- end }}
{{- if and (eq .Values.agent.mode "redis") (not .Values.redis.existingSecret) }}
{{- fail "agent.mode=redis needs redis.existingSecret (an existing Secret holding the Redis URL)" }}
{{- end }}
{{- range .Values.agent.report }}
{{- if not (has . (list "log" "annotations" "events")) }}
{{- fail (printf "agent.report: %q is not a Kubernetes reporter (log, annotations, events)" .) }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled .Values.podDisruptionBudget.minAvailable .Values.podDisruptionBudget.maxUnavailable }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and .Values.agent.busProxy.enabled (ne .Values.agent.shape "nativeSidecar") }}
{{- fail (printf "agent.busProxy.enabled needs agent.shape nativeSidecar (the relay must run beside Pylon for the pod's whole life; agent.shape %s has nothing running it after init), or the supervisor shape on Fly (pylon-agent serve --bus-proxy 127.0.0.1:6380 -- pylon start, docs/fly.md)" .Values.agent.shape) }}
{{- end }}
{{- if and .Values.agent.busProxy.enabled (not .Values.agent.busProxy.address) }}
{{- fail "agent.busProxy.enabled needs agent.busProxy.address (a loopback address, e.g. 127.0.0.1:6380)" }}
{{- end }}
{{- if and (not .Values.agent.install) (not .Values.agent.binaryPath) }}
{{- fail "agent.install=false needs agent.binaryPath (where Pylon's image ships pylon-agent)" }}
{{- end }}
{{- end }}

{{/* The pylon-agent binary as Pylon's container sees it. */}}
{{- define "pylon.agentBinInPylon" -}}
{{- if .Values.agent.install }}{{ include "pylon.sharedDir" . }}/bin/pylon-agent{{ else }}{{ .Values.agent.binaryPath }}{{ end }}
{{- end }}

{{/*
Environment of an agent container.  Call with
(dict "root" $ "serve" true|false "report" "log,events").
*/}}
{{- define "pylon.agentEnv" -}}
{{- $v := .root.Values -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: PYLON_AGENT_PLATFORM
  value: kubernetes
- name: PYLON_AGENT_MODE
  value: {{ $v.agent.mode | quote }}
- name: PYLON_AGENT_NAMESPACE
  value: {{ include "pylon.agentNamespace" .root | quote }}
{{- if $v.redis.existingSecret }}
- name: PYLON_AGENT_REDIS_URL_FILE
  value: {{ printf "%s/url" (include "pylon.redisDir" .root) | quote }}
{{- end }}
{{- if $v.redis.caSecret }}
- name: PYLON_AGENT_REDIS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "pylon.redisCADir" .root) | quote }}
{{- end }}
{{- if $v.agent.busProxy.enabled }}
# Pylon's env file gets redis://...@<address>; serve relays it over TLS.
- name: PYLON_AGENT_BUS_PROXY
  value: {{ $v.agent.busProxy.address | quote }}
{{- end }}
- name: PYLON_AGENT_REPORT
  value: {{ .report | quote }}
- name: PYLON_AGENT_ON_DISCOVERY_ERROR
  value: {{ $v.agent.onDiscoveryError | quote }}
- name: PYLON_AGENT_COUNT_SURGE
  value: {{ $v.agent.countSurge | toString | quote }}
- name: PYLON_AGENT_MIN_PEERS
  value: {{ $v.agent.minPeers | int | toString | quote }}
{{- with (include "pylon.appSelector" .root) }}
- name: PYLON_AGENT_APP_SELECTOR
  value: {{ . | quote }}
{{- end }}
- name: PYLON_AGENT_TIMEOUT
  value: {{ $v.agent.timeout | quote }}
- name: PYLON_AGENT_API_TIMEOUT
  value: {{ $v.agent.apiTimeout | quote }}
- name: PYLON_AGENT_ENV_FILE
  value: {{ include "pylon.envFile" .root | quote }}
- name: PYLON_AGENT_LOG_FORMAT
  value: {{ $v.agent.logFormat | quote }}
{{- if .serve }}
- name: PYLON_AGENT_LISTEN
  value: {{ printf "0.0.0.0:%d" (int $v.agent.port) | quote }}
- name: PYLON_AGENT_ON_DRIFT
  value: {{ $v.agent.onDrift | quote }}
- name: PYLON_AGENT_DEAF_PYLON
  value: {{ $v.agent.deafPylon | default "heal" | quote }}
- name: PYLON_AGENT_INTERVAL
  value: {{ $v.agent.interval | quote }}
- name: PYLON_AGENT_RESYNC
  value: {{ $v.agent.resync | quote }}
{{- end }}
{{- with $v.agent.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of an agent container (init / serve). */}}
{{- define "pylon.agentMounts" -}}
- name: pylon-agent
  mountPath: {{ include "pylon.sharedDir" . }}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- if .Values.redis.existingSecret }}
- name: redis-url
  mountPath: {{ include "pylon.redisDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.redis.caSecret }}
- name: redis-ca
  mountPath: {{ include "pylon.redisCADir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The HTTP probes of `pylon-agent serve`. */}}
{{- define "pylon.agentProbes" -}}
{{- $p := .Values.agent.probes -}}
{{- if eq .Values.agent.shape "nativeSidecar" -}}
startupProbe:
  httpGet:
    path: /startupz
    port: agent-http
  periodSeconds: {{ $p.startup.periodSeconds | int }}
  failureThreshold: {{ $p.startup.failureThreshold | int }}
{{ end -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: agent-http
  periodSeconds: {{ $p.readiness.periodSeconds | int }}
  failureThreshold: {{ $p.readiness.failureThreshold | int }}
livenessProbe:
  httpGet:
    path: /livez
    port: agent-http
  periodSeconds: {{ $p.liveness.periodSeconds | int }}
  failureThreshold: {{ $p.liveness.failureThreshold | int }}
{{- end }}

{{/* The serve container (native or classic sidecar). */}}
{{- define "pylon.serveContainer" -}}
- name: pylon-agent
  image: {{ include "pylon.agentImage" . }}
  imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
  {{- if eq .Values.agent.shape "nativeSidecar" }}
  restartPolicy: Always
  {{- end }}
  command:
    - {{ include "pylon.agentBin" . }}
    - serve
  terminationMessagePolicy: FallbackToLogsOnError
  ports:
    - name: agent-http
      containerPort: {{ .Values.agent.port | int }}
      protocol: TCP
  env:
    {{- include "pylon.agentEnv" (dict "root" . "serve" true "report" (join "," .Values.agent.report)) | nindent 4 }}
  {{- include "pylon.agentProbes" . | nindent 2 }}
  volumeMounts:
    {{- include "pylon.agentMounts" . | nindent 4 }}
  resources:
    {{- toYaml .Values.agent.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
{{- end }}
