{{/* Name of the release's objects: the release name when it already names the chart. */}}
{{- define "wva.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wva.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wva.labels" -}}
{{ include "wva.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "wva.serviceHost" -}}
{{ include "wva.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end -}}

{{- define "wva.tlsSecret" -}}
{{- if eq .Values.certificates.mode "existingSecret" -}}
{{- .Values.certificates.existingSecret -}}
{{- else -}}
{{- include "wva.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{- define "wva.kedaClientCASecret" -}}
{{- if .Values.keda.clientCA.existingSecret -}}
{{- .Values.keda.clientCA.existingSecret -}}
{{- else -}}
{{- include "wva.fullname" . }}-keda-client-ca
{{- end -}}
{{- end -}}

{{- define "wva.image" -}}
{{- printf "%s:%s" .Values.wva.image.repository (default .Chart.AppVersion .Values.wva.image.tag) -}}
{{- end -}}

{{/*
Values that contradict each other: each fails `helm template` / `helm install`
with a message naming the values involved and what to change.
*/}}
{{- define "wva.validate" -}}
{{- $v := .Values -}}
{{- $registers := or $v.apiService.external $v.apiService.custom -}}
{{- if and $v.controller.enabled $registers (eq $v.certificates.mode "none") -}}
{{- fail "apiService.external/apiService.custom register an APIService, but certificates.mode is none: the aggregator needs the CA of the server's certificate (caBundle). Set certificates.mode to generate, certManager or existingSecret, or apiService.external=false and apiService.custom=false." -}}
{{- end -}}
{{- if and (eq $v.certificates.mode "existingSecret") (not $v.certificates.existingSecret) -}}
{{- fail "certificates.mode is existingSecret but certificates.existingSecret names no Secret." -}}
{{- end -}}
{{- if and $v.controller.enabled $registers (eq $v.certificates.mode "existingSecret") (not $v.certificates.caBundle) -}}
{{- fail "certificates.mode is existingSecret and an APIService is registered, but certificates.caBundle is empty: the APIService needs the CA (PEM) that signed the Secret's certificate." -}}
{{- end -}}
{{- if and $v.keda.enabled (not $v.keda.clientCA.existingSecret) (not $v.keda.clientCA.caCert) -}}
{{- fail "keda.enabled requires mutual TLS: set keda.clientCA.existingSecret (a Secret with key ca.crt) or keda.clientCA.caCert (PEM) to the CA of KEDA's client certificate (docs/keda.md)." -}}
{{- end -}}
{{- if and $v.keda.enabled (eq $v.certificates.mode "none") -}}
{{- fail "keda.enabled with certificates.mode none: KEDA verifies the server against the CA in its ScaledObject's caCert; use a certificate mode with a CA (generate, certManager or existingSecret)." -}}
{{- end -}}
{{- if and (gt (int $v.replicaCount) 1) (not $v.leaderElection.enabled) $v.updateStatus (eq $v.inventory.mode "kube") -}}
{{- fail (printf "replicaCount is %d with leaderElection.enabled=false and updateStatus=true: every replica would write VariantAutoscaling status. Turn leaderElection.enabled on, or updateStatus off, or use one replica." (int $v.replicaCount)) -}}
{{- end -}}
{{- if and $v.podDisruptionBudget.enabled (ge (int $v.podDisruptionBudget.minAvailable) (int $v.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) is not below replicaCount (%d): no pod could ever be evicted and every node drain would block. Lower minAvailable, raise replicaCount, or set podDisruptionBudget.enabled=false." (int $v.podDisruptionBudget.minAvailable) (int $v.replicaCount)) -}}
{{- end -}}
{{- if and (eq $v.inventory.mode "file") (not $v.inventory.file) -}}
{{- fail "inventory.mode is file but inventory.file is empty: give the inventory YAML (docs/examples/inventory.yaml shows its shape)." -}}
{{- end -}}
{{- if and $v.acceleratorInventory.enabled (ne $v.inventory.mode "kube") -}}
{{- fail "acceleratorInventory.enabled needs inventory.mode kube (it watches the cluster's Nodes)." -}}
{{- end -}}
{{- if and (eq $v.metricsBackend "prometheus") (not $v.wva.prometheus.baseURL) -}}
{{- fail "metricsBackend is prometheus but wva.prometheus.baseURL is empty: set the store's query URL, or metricsBackend=scrape." -}}
{{- end -}}
{{- if and $v.wva.prometheus.basicAuth.username $v.wva.prometheus.bearerTokenFile -}}
{{- fail "wva.prometheus.basicAuth and wva.prometheus.bearerTokenFile are both set: a request carries one Authorization header; choose one." -}}
{{- end -}}
{{- if and $v.wva.prometheus.basicAuth.username (not $v.wva.prometheus.basicAuth.passwordSecret.name) -}}
{{- fail "wva.prometheus.basicAuth.username is set without wva.prometheus.basicAuth.passwordSecret.name." -}}
{{- end -}}
{{- if and $v.wva.prometheus.caCert $v.wva.prometheus.caSecret.name -}}
{{- fail "wva.prometheus.caCert and wva.prometheus.caSecret.name are both set: give the store's CA one way." -}}
{{- end -}}
{{- if and $v.wva.namespaceScoped $v.watchNamespaces -}}
{{- fail "wva.namespaceScoped=true and watchNamespaces are both set: namespaceScoped means the release namespace only." -}}
{{- end -}}
{{- end -}}
