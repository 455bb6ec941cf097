{{/*
Canonical helpers of the blacklist-operator chart. Every name is truncated to
63 characters (the limit of a DNS-1123 label) and stripped of a trailing dash.
*/}}

{{/*
The chart's name, or nameOverride.
*/}}
{{- define "blacklist-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name of the release's objects: fullnameOverride, else the
release name when it already contains the chart name, else "<release>-<chart>".
*/}}
{{- define "blacklist-operator.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label (a label value allows no "+").
*/}}
{{- define "blacklist-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels of every object of the chart; the operator's own objects add
app.kubernetes.io/component: operator.
*/}}
{{- define "blacklist-operator.labels" -}}
helm.sh/chart: {{ include "blacklist-operator.chart" . }}
{{ include "blacklist-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: blacklist-operator
{{- end }}

{{/*
The labels that select the operator's pods: only name and instance, which never
change over the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "blacklist-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "blacklist-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the Service in front of the operator's metrics port.
*/}}
{{- define "blacklist-operator.metricsName" -}}
{{- printf "%s-metrics" (include "blacklist-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
The name of the operator's ServiceAccount.
*/}}
{{- define "blacklist-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "blacklist-operator.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's image: repository and tag, the tag defaulting to appVersion.
*/}}
{{- define "blacklist-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Whether the operator watches every namespace (operator.watchNamespaces empty).
Renders "true" or nothing, so it can be used in an `if`.
*/}}
{{- define "blacklist-operator.clusterWide" -}}
{{- if empty .Values.operator.watchNamespaces }}true{{- end }}
{{- end }}

{{/*
The rules of the cluster-scoped objects the operator needs in every mode:
kopf's discovery of its CRD and of namespaces, and, when enabled, the static
hostPath PersistentVolumes it creates for spec.database.storage.hostPath: it
reads one by name to check that it is its own before it applies or deletes it,
and never lists or watches them. Every verb below is one the code calls
(chart/README.md#permissions lists who calls what).
*/}}
{{- define "blacklist-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- if .Values.rbac.persistentVolumes }}
- apiGroups: [""]
  resources: ["persistentvolumes"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- end }}

{{/*
The rules of the namespaced objects: the BlacklistServices it reconciles and
every child it owns. Children are written with server-side apply (create and
patch), watched by label (list, watch) and read by name (get); the garbage
collector deletes them, so only the ban-list ConfigMaps, which the ban sync
shrinks, may be deleted. Secrets are read and written by name only (get,
create, patch of N-db): no list or watch, so the operator cannot enumerate the
Secrets of a namespace. ServiceMonitors (spec.metrics.serviceMonitor) are
applied, read and deleted by name, not watched (the periodic resync restores
them), so they get no list or watch. It may create Roles only with rights it holds itself
(get/list/watch on configmaps for the service's ban list), so it has neither
escalate nor bind. No pods: nothing reads them. Events are write-only.
*/}}
{{- define "blacklist-operator.namespacedRules" -}}
- apiGroups: ["blacklist.dev"]
  resources: ["blacklistservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["blacklist.dev"]
  resources: ["blacklistservices/status"]
  verbs: ["get", "patch"]
- apiGroups: ["blacklist.dev"]
  resources: ["blacklistservices/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The name of the leader election's Lease: leaderElection.leaseName, else the full name.
*/}}
{{- define "blacklist-operator.leaseName" -}}
{{- default (include "blacklist-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Refuse leader-election timings the operator would refuse at start (crash-looping):
the renew deadline below the lease duration, the retry period at most half of it.
*/}}
{{- define "blacklist-operator.checkLeaderElection" -}}
{{- with .Values.leaderElection }}
{{- if .enabled }}
{{- if not (lt (float64 .renewDeadlineSeconds) (float64 .leaseDurationSeconds)) }}
{{- fail "leaderElection.renewDeadlineSeconds must be below leaderElection.leaseDurationSeconds" }}
{{- end }}
{{- if gt (mulf 2 .retryPeriodSeconds) (float64 .renewDeadlineSeconds) }}
{{- fail "leaderElection.retryPeriodSeconds must be at most half of leaderElection.renewDeadlineSeconds" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
