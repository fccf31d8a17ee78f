{{/*
Names and labels of the objects the official dagster chart creates, so this chart's guardrails can
select them. They mirror the official chart's helpers (helm/dagster/templates/helpers/_helpers.tpl)
for the values the platform uses: no nameOverride, dagsterWebserver.nameOverride "dagster-webserver".
*/}}

{{- define "platform.labels" -}}
app.kubernetes.io/name: dagster-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dagster
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ .Values.labelDomain }}/environment: {{ .Values.environment.name }}
{{- end -}}

{{/* Pod labels the official chart puts on its webserver and daemon pods. */}}
{{- define "platform.dagsterSelector" -}}
app.kubernetes.io/name: dagster
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "platform.webserverService" -}}
{{- $name := .Values.dagster.dagsterWebserver.nameOverride | default "webserver" -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "platform.readOnlyWebserverService" -}}
{{- printf "%s-read-only" (include "platform.webserverService" .) -}}
{{- end -}}

{{- define "platform.webserverPort" -}}
{{- .Values.dagster.dagsterWebserver.service.port | default 80 -}}
{{- end -}}

{{- define "platform.migrateJobName" -}}
{{- $name := .Values.dagster.dagsterWebserver.nameOverride | default "dagster-webserver" -}}
{{- printf "%s-%s-instance-migrate" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Guards evaluated by every template that includes it: rendering fails instead of producing
manifests for the wrong place.
*/}}
{{- define "platform.guards" -}}
{{- if ne .Release.Namespace .Values.environment.namespace -}}
{{- fail (printf "release namespace %q is not the namespace of environment %q (%q)" .Release.Namespace .Values.environment.name .Values.environment.namespace) -}}
{{- end -}}
{{- if not .Values.global.postgresqlSecretName -}}
{{- fail "global.postgresqlSecretName is required: the Postgres password Secret is managed outside the chart" -}}
{{- end -}}
{{- if (.Values.dagster.postgresql | default dict).postgresqlPassword -}}
{{- fail "dagster.postgresql.postgresqlPassword must not be set: the password comes from the Secret global.postgresqlSecretName" -}}
{{- end -}}
{{- if and .Values.previews.enabled (eq .Values.environment.tier "production") -}}
{{- fail (printf "previews.enabled must be false in %s, a production-tier environment: previews never run there" .Values.environment.name) -}}
{{- end -}}
{{- end -}}

{{/* The official chart's instance ConfigMap (`dagster.fullname`-instance; release names containing "dagster" keep their name). */}}
{{- define "platform.instanceConfigMap" -}}
{{- $full := ternary .Release.Name (printf "%s-dagster" .Release.Name) (contains "dagster" .Release.Name) -}}
{{- printf "%s-instance" ($full | trunc 63 | trimSuffix "-") -}}
{{- end -}}
