{{/* Names, labels and values every template shares. */}}

{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" . }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: parley
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "parley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "parley.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; a digest wins over the tag. */}}
{{- define "parley.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The watched namespaces, de-duplicated, in the order given. */}}
{{- define "parley.watchNamespaces" -}}
{{- uniq .Values.watchNamespaces | join "," }}
{{- end }}

{{/* Labels for the CRDs: no instance label, since the CRD outlives the release. */}}
{{- define "parley.crdLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/part-of: parley
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "parley.chart" . }}
{{- end }}

{{/* Leader election: the Lease in the operator's namespace (client-go reads,
creates and renews it) and the core Events it records about it. */}}
{{- define "parley.rules.leaderElection" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The operator's command-line flags (cmd/manager). */}}
{{- define "parley.operatorArgs" -}}
- --leader-elect={{ .Values.operator.leaderElection.enabled }}
- --metrics-bind-address={{ if .Values.metrics.enabled }}:{{ .Values.metrics.port }}{{ else }}0{{ end }}
{{- if .Values.metrics.enabled }}
- --metrics-secure={{ .Values.metrics.secure }}
{{- with .Values.metrics.certSecret }}
- --metrics-cert-path=/tmp/k8s-metrics-server/metrics-certs
{{- end }}
{{- end }}
- --health-probe-bind-address=:{{ .Values.health.port }}
{{- with include "parley.watchNamespaces" . }}
- --watch-namespaces={{ . }}
{{- end }}
- --chat-server-image={{ default (include "parley.image" .) .Values.operator.defaultChatServerImage }}
- --kube-api-qps={{ .Values.operator.kubeAPIQPS }}
- --kube-api-burst={{ .Values.operator.kubeAPIBurst }}
- --max-concurrent-reconciles={{ .Values.operator.maxConcurrentReconciles }}
- --resync-period={{ .Values.operator.resyncPeriod }}
{{- with .Values.operator.provisioning }}
- --cleanup-retry-for={{ .cleanupRetryFor }}
- --cleanup-backoff={{ .cleanupBackoff }}
- --cleanup-max-backoff={{ .cleanupMaxBackoff }}
- --external-call-timeout={{ .callTimeout }}
- --external-connect-timeout={{ .connectTimeout }}
- --backend-concurrency={{ .backendConcurrency }}
- --unreachable-backoff={{ .unreachableBackoff }}
{{- with .checkInterval }}
- --external-check-interval={{ . }}
{{- end }}
{{- end }}
{{- with .Values.operator.clusterDomain }}
- --cluster-domain={{ . }}
{{- end }}
- --zap-log-level={{ .Values.operator.logLevel }}
{{- with .Values.operator.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}
