{{/* The name of one of the chart's objects: namePrefix and the name config/ uses. */}}
{{- define "kvstore-operator.name" -}}
{{ .root.Values.namePrefix }}{{ .name }}
{{- end }}

{{/* Labels on every object: helm's own, besides what config/ sets. */}}
{{- define "kvstore-operator.labels" -}}
app.kubernetes.io/name: kvstore-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The resources no Role can grant: a ClusterRole keeps them in namespace-scoped mode. */}}
{{- define "kvstore-operator.clusterScoped" -}}
nodes persistentvolumes namespaces
{{- end }}
