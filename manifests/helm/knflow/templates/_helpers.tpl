{{/* The chart name, or nameOverride. */}}
{{- define "knflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object: the release name, with the chart name unless it already has it. */}}
{{- define "knflow.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) are shared by every namespace: the
release's namespace is in their name. */}}
{{- define "knflow.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "knflow.fullname" .) -}}
{{- end -}}

{{- define "knflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "knflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "knflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "knflow.labels" -}}
helm.sh/chart: {{ include "knflow.chart" . }}
{{ include "knflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "knflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "knflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "knflow.leaseName" -}}
{{- default (include "knflow.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* The Secret with the API token: the chart's own, or apiToken.existingSecret. */}}
{{- define "knflow.tokenSecretName" -}}
{{- default (printf "%s-api-token" (include "knflow.fullname" .)) .Values.apiToken.existingSecret -}}
{{- end -}}

{{- define "knflow.tokenSecretKey" -}}
{{- if .Values.apiToken.existingSecret -}}
{{- .Values.apiToken.existingSecretKey -}}
{{- else -}}
token
{{- end -}}
{{- end -}}

{{/* The token of the chart's own Secret: apiToken.value, else the one the installed Secret
already holds (so that upgrades keep it), else a new random one. `lookup` finds nothing under
`helm template` and --dry-run, which therefore show a new token each time. */}}
{{- define "knflow.apiToken" -}}
{{- if .Values.apiToken.value -}}
{{- .Values.apiToken.value -}}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "knflow.tokenSecretName" .) -}}
{{- if and $secret (hasKey ($secret.data | default dict) "token") -}}
{{- index $secret.data "token" | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "knflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
