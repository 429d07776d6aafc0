{{- define "lineguard.labels" -}}
app.kubernetes.io/part-of: lineguard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "lineguard.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .name }}
{{- end }}

{{- define "lineguard.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .name .root.Values.image.tag }}
{{- end }}

{{/* The line's YAML: the values' line, with the in-cluster NATS, the database and the health ports filled in. */}}
{{- define "lineguard.config" -}}
{{- $line := deepCopy .Values.line }}
{{- $_ := set $line "nats" (dict "url" (printf "nats://%s-nats:4222" .Release.Name) "credentials_dir" "/run/secrets/nats" "tls" (dict "ca_file" "/run/secrets/nats/ca.pem") "stream_max_bytes" (.Values.nats.streamMaxBytes | int64)) }}
{{- $url := .Values.database.url }}
{{- if .Values.database.bundled.enabled }}{{ $url = printf "postgresql+psycopg://lineguard@%s-postgres/lineguard" .Release.Name }}{{ end }}
{{- $_ := set $line "database" (dict "url" $url) }}
{{- $services := dict }}
{{- range $name := list "capture" "inference" "ocr" "decision" "gateway" "results" }}
{{- $_ := set $services $name (dict "http_host" "0.0.0.0" "http_port" 9100) }}
{{- end }}
{{- $_ := set $line "services" $services }}
{{- toYaml $line }}
{{- end }}

{{/* Seconds the gateway may take to stop: the longest recipe deadline (the parts in flight are answered), the
workers' 10 s to finish the message in hand, and 5 s to spare (docs/opcua.md, Stopping). */}}
{{- define "lineguard.gatewayGrace" -}}
{{- $longest := 0 }}
{{- range $id, $recipe := .Values.line.recipes }}
{{- $longest = max $longest (int (default 3000 $recipe.deadline_ms)) }}
{{- end }}
{{- add (div (add $longest 999) 1000) 15 }}
{{- end }}

{{- define "lineguard.dbPasswordEnv" -}}
- name: LINEGUARD_DATABASE__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.bundled.enabled | ternary (printf "%s-postgres" .Release.Name) .Values.database.passwordSecret }}
      key: {{ .Values.database.bundled.enabled | ternary "password" .Values.database.passwordKey }}
{{- end }}

{{- define "lineguard.securityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "lineguard.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end }}
