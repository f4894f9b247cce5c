{{/* Labels every object carries. */}}
{{- define "hybridml.labels" -}}
app.kubernetes.io/part-of: hybridml
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* MLflow's selector labels. */}}
{{- define "hybridml.mlflowSelector" -}}
app.kubernetes.io/name: mlflow
app.kubernetes.io/component: tracking
{{- end }}

{{/* What Pod Security "restricted" asks of every container (read-only root: /tmp is an emptyDir). */}}
{{- define "hybridml.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* One ServiceAccount: name, annotations (shared + own), token automount. */}}
{{- define "hybridml.serviceAccount" -}}
{{- $ := index . 0 }}{{ $account := index . 1 }}{{ $automount := index . 2 -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $account.name }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "hybridml.labels" $ | nindent 4 }}
  {{- with merge (dict) $account.annotations $.Values.serviceAccountAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if not $automount }}
automountServiceAccountToken: false
{{- end }}
{{- end }}

{{/* PostgreSQL's (Optuna's study storage) selector labels. */}}
{{- define "hybridml.postgresqlSelector" -}}
app.kubernetes.io/name: postgresql
app.kubernetes.io/component: optuna-storage
{{- end }}

{{/* The PostgreSQL image: repository:tag, and @digest when one is pinned. */}}
{{- define "hybridml.postgresqlImage" -}}
{{- $i := .Values.postgresql.image -}}
{{ $i.repository }}:{{ $i.tag }}{{ with $i.digest }}@{{ . }}{{ end }}
{{- end }}
