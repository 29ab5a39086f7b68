{{/* Names --------------------------------------------------------------------------------- */}}

{{- define "phoenix-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phoenix-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "phoenix-operator.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "phoenix-operator.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "phoenix-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "phoenix-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "phoenix-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "phoenix-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels -------------------------------------------------------------------------------- */}}

{{- define "phoenix-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phoenix-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "phoenix-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "phoenix-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phoenix
{{- end -}}

{{/* Mode ---------------------------------------------------------------------------------- */}}

{{- define "phoenix-operator.clusterMode" -}}
{{- if eq .Values.watch.mode "cluster" -}}true{{- end -}}
{{- end -}}

{{/* The namespaces a namespaced operator watches (a JSON list; the release's by default). */}}
{{- define "phoenix-operator.watchNamespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{- define "phoenix-operator.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules: exactly the API calls the operator makes (docs/deploy.md, "Permissions", lists the
call sites). Namespaced resources only; the peering rule differs between the two modes and is
added by rbac.yaml. `create` accompanies `patch` on every child kind because a server-side apply
that creates the object is authorised as `create` as well.
*/}}
{{- define "phoenix-operator.rules" -}}
# Kopf watches PhoenixDeployments and patches them (finalizers, its progress annotations); the
# reconciler re-reads one under a lock before each pass.
- apiGroups: ["serving.phoenixoperator.io"]
  resources: ["phoenixdeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, replicas, decisions: the reconciler and the control loop merge-patch status.
- apiGroups: ["serving.phoenixoperator.io"]
  resources: ["phoenixdeployments/status"]
  verbs: ["patch"]
# core/v1 Events: the reconciler's condition changes, the control loop's decisions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Children: server-side apply (create + patch) after a get, pruning by label (list + delete).
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "create", "patch", "delete"]
# Deployments, StatefulSets and CronJobs are also watched, so status follows them within seconds.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Jobs of its CronJobs (evaluation, refresh, retraining): finished ones refresh status.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch"]
# Each deployment's NetworkPolicies (who may reach Triton and Milvus).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- if .Values.rbac.prometheusOperator }}
# Rendered only when the Prometheus Operator's API is served (PodMonitor, PrometheusRule).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors", "prometheusrules"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.milvusOperator }}
# Rendered only when the Milvus Operator's API is served (managed retrieval as a Milvus CR).
- apiGroups: ["milvus.io"]
  resources: ["milvuses"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
# Status: which Triton pods the scheduler refused (InsufficientGPU) and how many GPUs run.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Secrets by name only (no list or watch): model-store credentials and the external Milvus token
# the spec names, and the ones the operator generates once (Triton's control key, Milvus' root).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# Control loop: the ready Triton endpoints to reload batching on.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
{{- end -}}

{{- define "phoenix-operator.peeringRule" -}}
# Kopf peering: it lists and watches the peering objects and patches its keep-alive into ours.
- apiGroups: ["kopf.dev"]
  resources: [{{ if include "phoenix-operator.clusterMode" . }}"clusterkopfpeerings"{{ else }}"kopfpeerings"{{ end }}]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: [{{ if include "phoenix-operator.clusterMode" . }}"clusterkopfpeerings"{{ else }}"kopfpeerings"{{ end }}]
  resourceNames: [{{ .Values.peering.name | quote }}]
  verbs: ["patch"]
{{- end -}}
