{{/* Chart name. */}}
{{- define "kasse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide prefix of every resource name. */}}
{{- define "kasse.fullname" -}}
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

{{/* The service names, in a fixed order. */}}
{{- define "kasse.serviceNames" -}}catalog cart payment shipping metrics webhooks storefront{{- end -}}

{{/* Name of one service's resources: dict "root" $ "name" "cart". */}}
{{- define "kasse.svc.fullname" -}}
{{- printf "%s-%s" (include "kasse.fullname" .root | trunc 54 | trimSuffix "-") .name -}}
{{- end -}}

{{/* A service's effective values: defaults deep-merged with services.<name>. */}}
{{- define "kasse.svc.values" -}}
{{- $svc := index .root.Values.services .name | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy $svc)) -}}
{{- end -}}

{{- define "kasse.labels.common" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: kasse
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one service: dict "root" $ "name" "cart". */}}
{{- define "kasse.svc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kasse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "kasse.svc.labels" -}}
{{ include "kasse.labels.common" .root }}
{{ include "kasse.svc.selectorLabels" . }}
{{- end -}}

{{/* Labels of release-wide resources (Secret, shared ConfigMap, Job, topics). */}}
{{- define "kasse.labels" -}}
{{ include "kasse.labels.common" . }}
app.kubernetes.io/name: {{ include "kasse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Image of one service: dict "root" $ "name" "cart" "values" $v. */}}
{{- define "kasse.svc.image" -}}
{{- $img := .root.Values.image -}}
{{- $ref := printf "%s/%s-%s" $img.registry $img.repository .name | trimPrefix "/" -}}
{{- $digest := "" -}}
{{- if .values.image -}}{{- $digest = .values.image.digest | default "" -}}{{- end -}}
{{- if $digest -}}
{{- printf "%s@%s" $ref $digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kasse.secretName" -}}
{{- default (printf "%s-secrets" (include "kasse.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "kasse.sharedConfigName" -}}
{{- printf "%s-shared" (include "kasse.fullname" .) -}}
{{- end -}}

{{- define "kasse.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- include "kasse.svc.fullname" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* The upper-case env prefix of one service: KASSE_CART_. */}}
{{- define "kasse.envPrefix" -}}
{{- printf "KASSE_%s_" (upper .) -}}
{{- end -}}

{{/* Checks that fail the render with a clear message. */}}
{{- define "kasse.validate" -}}
{{- $p := .Values.kafka.securityProtocol -}}
{{- if and (hasPrefix "SASL_" $p) (not .Values.kafka.sasl.mechanism) -}}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $p) -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not (hasPrefix "SASL_" $p)) -}}
{{- fail (printf "kafka.sasl.mechanism is set but kafka.securityProtocol=%s: use SASL_SSL (or SASL_PLAINTEXT)" $p) -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.username) -}}
{{- fail "kafka.sasl.mechanism is set: kafka.sasl.username is needed too" -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.secrets.existingSecret) (not .Values.secrets.kafkaSaslPassword) -}}
{{- fail "kafka.sasl.mechanism is set: secrets.kafkaSaslPassword (or secrets.existingSecret with that key) is required" -}}
{{- end -}}
{{- if and .Values.topics.strimzi.enabled .Values.topics.job.enabled -}}
{{- fail "topics.strimzi.enabled and topics.job.enabled: choose one way to create the topics" -}}
{{- end -}}
{{- $m := mergeOverwrite (deepCopy .Values.defaults) (deepCopy .Values.services.metrics) -}}
{{- $max := int .Values.topics.maxConsumerReplicas -}}
{{- if gt (int $m.replicaCount) $max -}}
{{- fail (printf "services.metrics.replicaCount=%d: at most %d replicas own a partition (topics have %d partitions); the rest would idle" (int $m.replicaCount) $max $max) -}}
{{- end -}}
{{- if and $m.autoscaling.enabled (gt (int $m.autoscaling.maxReplicas) $max) -}}
{{- fail (printf "services.metrics.autoscaling.maxReplicas=%d: at most %d replicas own a partition" (int $m.autoscaling.maxReplicas) $max) -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not .Values.ingress.tls.secretName) -}}
{{- fail "ingress.tls.enabled needs ingress.tls.secretName" -}}
{{- end -}}
{{- end -}}

{{/* A Secret value (base64): the given one, else the live Secret's, else a new random token. */}}
{{- define "kasse.secretValue" -}}
{{- if .given -}}{{- .given | b64enc -}}
{{- else if hasKey .live .key -}}{{- index .live .key -}}
{{- else -}}{{- randAlphaNum 40 | b64enc -}}
{{- end -}}
{{- end -}}
