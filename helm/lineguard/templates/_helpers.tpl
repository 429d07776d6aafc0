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

{{/* The line's YAML: the values' line, with the in-cluster NATS, the database, the health ports and a folder archive's
   path on its PVC filled in. */}}
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
{{- if eq (include "lineguard.folderArchive" .) "true" }}
{{- $archive := deepCopy (default dict $line.archive) }}
{{- $_ := set $archive "kind" "folder" }}
{{- $_ := set $archive "path" "/var/lib/lineguard/images" }}
{{- if not (hasKey $archive "max_bytes") }}{{ $_ := set $archive "max_bytes" (.Values.archive.maxBytes | int64) }}{{ end }}
{{- $_ := set $line "archive" $archive }}
{{- end }}
{{- toYaml $line }}
{{- end }}

{{/* "true" when the images are kept in a folder (the line's archive kind, folder by default): on the images PVC. */}}
{{- define "lineguard.folderArchive" -}}
{{- eq (dig "archive" "kind" "folder" .Values.line) "folder" }}
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

{{/* An s3 archive's credentials, for the pods that read or write it (results, api). */}}
{{- define "lineguard.archiveEnv" -}}
{{- with .Values.archive.s3CredentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ . }}, key: access_key_id}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ . }}, key: secret_access_key}}
{{- end }}
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
