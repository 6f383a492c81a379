{{/*
Shared helpers. Component templates call them with a dict:
  (dict "ctx" $ "component" "inference")
*/}}

{{- define "tagloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tagloop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects, e.g. tagloop-inference. */}}
{{- define "tagloop.componentName" -}}
{{- printf "%s-%s" (include "tagloop.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tagloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagloop.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tagloop.labels" -}}
{{ include "tagloop.selectorLabels" . }}
app.kubernetes.io/version: {{ include "tagloop.imageTag" .ctx | quote }}
app.kubernetes.io/part-of: tagloop
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tagloop.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* <registry>/tagloop-<component>:<tag>, and @<digest> when the release
workflow resolved one: the pods then run exactly the tested image. */}}
{{- define "tagloop.image" -}}
{{- $image := .ctx.Values.image -}}
{{- printf "%s/tagloop-%s:%s" $image.registry .component (include "tagloop.imageTag" .ctx) -}}
{{- with get ($image.digests | default dict) .component -}}@{{ . }}{{- end -}}
{{- end -}}

{{- define "tagloop.serviceAccountName" -}}
{{- $sa := (index .ctx.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "tagloop.componentName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Roll a component's pods when their configuration changes: the shared
ConfigMap and the component's own, never another component's (a UI setting
must not restart the singleton learner). */}}
{{- define "tagloop.podAnnotations" -}}
{{- $base := .ctx.Template.BasePath -}}
{{- $common := include (print $base "/common/configmap.yaml") .ctx -}}
{{- $own := include (printf "%s/%s/configmap.yaml" $base .component) .ctx -}}
checksum/config: {{ print $common $own | sha256sum }}
{{- with (index .ctx.Values .component).podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Pod spec parts every component shares: service account, pull secrets,
security context, scheduling. The service-account token is not mounted:
no component talks to the Kubernetes API (Workload Identity does not need it).
*/}}
{{- define "tagloop.podCommon" -}}
{{- $values := index .ctx.Values .component -}}
serviceAccountName: {{ include "tagloop.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container parts every component shares: image, config, probes, security. */}}
{{- define "tagloop.containerCommon" -}}
{{- $values := index .ctx.Values .component -}}
image: {{ include "tagloop.image" . }}
imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
ports:
  - name: http
    containerPort: {{ $values.port }}
    protocol: TCP
envFrom:
  - configMapRef:
      name: {{ include "tagloop.fullname" .ctx }}-common
  - configMapRef:
      name: {{ include "tagloop.componentName" . }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
# The first model fit or download may take minutes: liveness waits for it.
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 5
  failureThreshold: 60
resources:
  {{- toYaml $values.resources | nindent 2 }}
securityContext:
  {{- toYaml .ctx.Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* S3 credentials as secretKeyRefs: the chart never holds the secret itself. */}}
{{- define "tagloop.s3CredentialsEnv" -}}
{{- $creds := (index .ctx.Values .component).s3Credentials -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $creds.existingSecret }}
      key: {{ $creds.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $creds.existingSecret }}
      key: {{ $creds.secretAccessKeyKey }}
{{- end -}}

{{- define "tagloop.serviceAccount" -}}
{{- $sa := (index .ctx.Values .component).serviceAccount -}}
{{- if $sa.create }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "tagloop.serviceAccountName" . }}
  labels:
    {{- include "tagloop.labels" . | nindent 4 }}
  {{- with $sa.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}

{{- define "tagloop.podDisruptionBudget" -}}
{{- $pdb := (index .ctx.Values .component).podDisruptionBudget -}}
{{- if $pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tagloop.componentName" . }}
  labels:
    {{- include "tagloop.labels" . | nindent 4 }}
spec:
  minAvailable: {{ $pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "tagloop.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "tagloop.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tagloop.componentName" . }}
  labels:
    {{- include "tagloop.labels" . | nindent 4 }}
  {{- $ing := .ctx.Values.ingress }}
  {{- if and (eq .component "ui") $ing.enabled $ing.securityPolicy }}
  annotations:
    # The ingress backend uses the BackendConfig with the Cloud Armor policy.
    cloud.google.com/backend-config: {{ dict "default" (include "tagloop.fullname" .ctx) | toJson | quote }}
  {{- end }}
spec:
  type: ClusterIP
  {{- if .headless }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "tagloop.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ (index .ctx.Values .component).port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{/* The UI origin that inference allows through CORS. */}}
{{- define "tagloop.corsOrigin" -}}
{{- if .Values.inference.corsOrigin -}}
{{- .Values.inference.corsOrigin -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "https://%s" .Values.ingress.host -}}
{{- else -}}
{{- printf "http://127.0.0.1:%v" .Values.ui.port -}}
{{- end -}}
{{- end -}}

{{/* A component's ingress NetworkPolicy; `rules` are its ingress rules
(rendered YAML list items, may be empty: nothing but what they allow). */}}
{{- define "tagloop.networkPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "tagloop.componentName" . }}
  labels:
    {{- include "tagloop.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "tagloop.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    {{- .rules | nindent 4 }}
{{- end -}}

{{/* The ingress rule that lets the monitoring namespaces scrape a component. */}}
{{- define "tagloop.monitoringIngress" -}}
{{- with .Values.networkPolicy.monitoringNamespaces }}
- from:
    - namespaceSelector:
        matchExpressions:
          - key: kubernetes.io/metadata.name
            operator: In
            values:
              {{- toYaml . | nindent 14 }}
  ports:
    - port: http
      protocol: TCP
{{- end }}
{{- end -}}

{{/* Scraping of one component's /metrics: PodMonitoring for Google managed
Prometheus, ServiceMonitor for the Prometheus operator. */}}
{{- define "tagloop.podMonitor" -}}
{{- $m := .ctx.Values.monitoring -}}
{{- if eq $m.provider "gmp" }}
apiVersion: monitoring.googleapis.com/v1
kind: PodMonitoring
{{- else }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
{{- end }}
metadata:
  name: {{ include "tagloop.componentName" . }}
  labels:
    {{- include "tagloop.labels" . | nindent 4 }}
    {{- with $m.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "tagloop.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $m.interval }}
{{- end -}}
