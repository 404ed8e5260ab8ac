{{/* The chart's name, overridable. */}}
{{- define "driftguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name, with the chart name
appended unless the release name already contains it. 63 characters at most (DNS label).
*/}}
{{- define "driftguard.fullname" -}}
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

{{- define "driftguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Deliberately not app.kubernetes.io/managed-by=driftguard
(Helm sets managed-by to Helm): the operator's watches select that label.
*/}}
{{- define "driftguard.labels" -}}
helm.sh/chart: {{ include "driftguard.chart" . }}
{{ include "driftguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "driftguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "driftguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "driftguard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The namespaces that get Roles when the operator is confined: watched first, then targets. */}}
{{- define "driftguard.roleNamespaces" -}}
{{- concat .Values.watchNamespaces .Values.rbac.targetNamespaces | uniq | toJson }}
{{- end }}

{{/*
Verbs on the kinds blueprints manage: get/list/watch to read and watch them;
patch (server-side apply, JSON patch) plus create, which the API server also
checks when an apply creates the object; delete for prune and deletionPolicy Delete.
No update: the operator never PUTs.
*/}}
{{- define "driftguard.managedRules" -}}
{{- range .Values.rbac.managedResources }}
- apiGroups: {{ toJson .apiGroups }}
  resources: {{ toJson .resources }}
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.manageSecrets }}
# rbac.manageSecrets: list and watch cannot be narrowed by label, so this reads every
# Secret in scope; without it a blueprint's Secret is Forbidden.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.attribution.enabled }}
# Attribution: a delete's or a scale's signed record is an Event beside the object,
# written by whichever replica's webhook admitted it and listed by the one acting on it.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end }}
{{- end }}

{{/*
What the operator itself needs on Environments and Events, in every namespace it serves:
kopf lists and watches Environments (it never GETs one) and patches them (its
finalizer, for deletionPolicy Delete) and their status (kopf's progress); driftguard
writes status and posts Events (always new ones, by generateName). Impersonating an
Environment's ServiceAccount is granted apart, by name and per namespace (impersonation.yaml).
Beside each Environment it keeps its history (ControllerRevisions), its drift
audit trail (a ConfigMap) and its Policy Report, all owned by the Environment.
*/}}
{{- define "driftguard.environmentRules" -}}
- apiGroups: ["driftguard.io"]
  resources: ["environments"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["driftguard.io"]
  resources: ["environments/status"]
  verbs: ["patch"]
# DriftExceptions live beside their Environments; the operator writes only their status.
- apiGroups: ["driftguard.io"]
  resources: ["driftexceptions"]
  verbs: ["list", "watch"]
- apiGroups: ["driftguard.io"]
  resources: ["driftexceptions/status"]
  verbs: ["patch"]
# Each Environment's Policy Report, owned by it: OpenReports when served, else the
# wgpolicyk8s.io one; get once after a restart, then applied only when a result changes.
- apiGroups: ["openreports.io"]
  resources: ["reports"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["wgpolicyk8s.io"]
  resources: ["policyreports"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.clusters.enabled }}
# spec.kubeConfig: the kubeconfig Secret of a remote cluster, read (get, by name) in the
# Environment's own namespace, again every few seconds so a rotated one is used at once.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
# History: applied (patch; create when new), listed by the Environment's label, the oldest
# deleted past revisionHistoryLimit. Never read one by one: no get.
- apiGroups: ["apps"]
  resources: ["controllerrevisions"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
{{- end }}

{{/*
Blueprints are cluster-scoped: read everywhere, their status written. Their revisions
are kept as ControllerRevisions in the release namespace (see blueprintHistoryRules).
*/}}
{{- define "driftguard.blueprintRules" -}}
- apiGroups: ["driftguard.io"]
  resources: ["blueprints"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["driftguard.io"]
  resources: ["blueprints/status"]
  verbs: ["patch"]
{{- end }}

{{/*
spec.prevention: one ValidatingAdmissionPolicy and binding per Environment (cluster-scoped
objects), kept like managed objects, labelled with the Environment; nothing else.
*/}}
{{- define "driftguard.preventionRules" -}}
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingadmissionpolicies", "validatingadmissionpolicybindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}

{{/*
The ServiceAccount names Environments may act as: tenancy.defaultServiceAccount and
tenancy.serviceAccounts, as a JSON list (empty: no impersonation at all).
*/}}
{{- define "driftguard.impersonatedNames" -}}
{{- $names := .Values.tenancy.serviceAccounts | default list }}
{{- with .Values.tenancy.defaultServiceAccount }}{{ $names = prepend $names . }}{{ end }}
{{- $names | uniq | toJson }}
{{- end }}

{{/*
The namespaces whose ServiceAccounts of those names the chart lets the operator impersonate:
tenancy.namespaces, else the watched namespaces. Never kube-system (the cluster's own
controllers) nor the release's namespace (the operator's own identity and Secrets): named
explicitly they fail the install, derived from watchNamespaces they are left out.
*/}}
{{- define "driftguard.impersonatedNamespaces" -}}
{{- $protected := list "kube-system" .Release.Namespace }}
{{- range .Values.tenancy.namespaces }}
{{- if has . $protected }}
{{- fail (printf "tenancy.namespaces: %s is refused: the operator never impersonates a ServiceAccount in kube-system or in its own namespace (%s)" . $.Release.Namespace) }}
{{- end }}
{{- end }}
{{- $namespaces := .Values.tenancy.namespaces | default .Values.watchNamespaces }}
{{- without $namespaces "kube-system" .Release.Namespace | uniq | toJson }}
{{- end }}
