{{/* Names and labels shared by every object of the chart. */}}
{{- define "medcycle.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "medcycle.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "medcycle.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "medcycle.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}

{{/* The deployment spec the workers read (medcycle.serving.deploy.DeploymentSpec). */}}
{{- define "medcycle.deploymentSpec" -}}
{{- $spec := dict "model" .Values.deployment.model "workers" (int .Values.worker.replicas) "generation" (int .Release.Revision) "api" false -}}
{{- if .Values.deployment.canary.percent -}}
{{- $_ := set $spec "canary_percent" .Values.deployment.canary.percent -}}
{{- $_ := set $spec "candidate" .Values.deployment.canary.candidate -}}
{{- end -}}
{{- if .Values.deployment.shadow -}}
{{- $_ := set $spec "shadow" .Values.deployment.shadow -}}
{{- end -}}
{{- toPrettyJson $spec -}}
{{- end -}}

{{/* Environment every medcycle container gets: the ConfigMap, then the secrets by reference. */}}
{{- define "medcycle.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "medcycle.fullname" . }}-config
env:
  - name: MEDCYCLE_HOME
    value: /var/lib/medcycle
  - name: MEDCYCLE_DEID_KEY_FILE
    value: /etc/medcycle/keys/deid.key
  - name: MEDCYCLE_DATABASE_URL
    valueFrom:
      secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: {{ .Values.secrets.keys.databaseUrl }}}
  - name: MEDCYCLE_SECRET_KEY
    valueFrom:
      secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: {{ .Values.secrets.keys.secretKey }}}
  - name: MEDCYCLE_S3_ACCESS_KEY_ID
    valueFrom:
      secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: {{ .Values.secrets.keys.s3AccessKeyId }}}
  - name: MEDCYCLE_S3_SECRET_ACCESS_KEY
    valueFrom:
      secretKeyRef: {name: {{ .Values.secrets.existingSecret }}, key: {{ .Values.secrets.keys.s3SecretAccessKey }}}
{{- end -}}

{{- define "medcycle.volumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
- name: deid-key
  secret:
    secretName: {{ .Values.secrets.existingSecret }}
    defaultMode: 0400
    items:
      - {key: {{ .Values.secrets.keys.deidKey }}, path: deid.key}
{{- end -}}

{{- define "medcycle.volumeMounts" -}}
- {name: home, mountPath: /var/lib/medcycle}
- {name: tmp, mountPath: /tmp}
- {name: deid-key, mountPath: /etc/medcycle/keys, readOnly: true}
{{- end -}}
