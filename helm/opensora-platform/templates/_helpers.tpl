{{/*
Names, labels, images, security contexts, endpoints and credential references shared by the templates.
*/}}

{{/* Chart name (nameOverride wins), cut to 63 characters. */}}
{{- define "opensora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix: fullnameOverride, else the release name when it contains the chart name, else both. */}}
{{- define "opensora.fullname" -}}
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

{{/* Name of one component: "<fullname>-<component>" (call with dict "ctx" . "component" "mlflow"). */}}
{{- define "opensora.componentName" -}}
{{- printf "%s-%s" (include "opensora.fullname" .ctx | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "opensora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "opensora.labels" -}}
helm.sh/chart: {{ include "opensora.chart" . }}
{{ include "opensora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: opensora-platform
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the release. */}}
{{- define "opensora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opensora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component (dict "ctx" . "component" "mlflow"). */}}
{{- define "opensora.componentLabels" -}}
{{ include "opensora.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component (dict "ctx" . "component" "mlflow"). */}}
{{- define "opensora.componentSelectorLabels" -}}
{{ include "opensora.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Image reference "registry/repository:tag[@digest]" (dict "image" .Values.x.image "default" "fallback-tag").
A tag is always present, so the image is pinned even when no digest is given.
*/}}
{{- define "opensora.image" -}}
{{- $tag := default .default .image.tag | toString -}}
{{- if or (not $tag) (eq $tag "latest") -}}
{{- fail (printf "image %s needs a pinned tag (not empty, not \"latest\")" .image.repository) -}}
{{- end -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}
{{- $repo = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $repo $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "opensora.runtimeImage" -}}
{{- include "opensora.image" (dict "image" .Values.runtimeImage "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* Restricted pod security context (dict "ids" .Values.x.securityContext). */}}
{{- define "opensora.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .ids.runAsUser }}
runAsGroup: {{ .ids.runAsGroup }}
fsGroup: {{ .ids.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted container security context: every container of the chart uses exactly this. */}}
{{- define "opensora.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* ServiceAccount of the chart's own pods. */}}
{{- define "opensora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "opensora.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---------- MLflow ---------- */}}

{{- define "opensora.mlflow.fullname" -}}
{{- include "opensora.componentName" (dict "ctx" . "component" "mlflow") -}}
{{- end -}}

{{/* In-cluster URL of the MLflow server. */}}
{{- define "opensora.mlflow.url" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "opensora.mlflow.fullname" .) .Release.Namespace .Values.clusterDomain .Values.mlflow.service.port -}}
{{- end -}}

{{/* Host headers MLflow accepts: localhost, every in-cluster spelling of the Service, Ingress hosts, extras. */}}
{{- define "opensora.mlflow.allowedHosts" -}}
{{- $svc := include "opensora.mlflow.fullname" . -}}
{{- $hosts := list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*" -}}
{{- range $name := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain) -}}
{{- $hosts = append $hosts $name -}}
{{- $hosts = append $hosts (printf "%s:*" $name) -}}
{{- end -}}
{{- if .Values.mlflow.ingress.enabled -}}
{{- range .Values.mlflow.ingress.hosts -}}
{{- $hosts = append $hosts .host -}}
{{- $hosts = append $hosts (printf "%s:*" .host) -}}
{{- end -}}
{{- end -}}
{{- $hosts = concat $hosts .Values.mlflow.allowedHosts -}}
{{- join "," (uniq $hosts) -}}
{{- end -}}

{{/* Secret with the pipeline's MLflow login (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). */}}
{{- define "opensora.mlflow.pipelineSecretName" -}}
{{- default .Values.pipelines.mlflowCredentials.secretName .Values.pipelines.mlflowCredentials.existingSecret -}}
{{- end -}}

{{- define "opensora.mlflow.auth.secretName" -}}
{{- default (printf "%s-auth" (include "opensora.mlflow.fullname" .)) .Values.mlflow.auth.existingSecret -}}
{{- end -}}

{{/* Location MLflow proxies artifacts to. */}}
{{- define "opensora.mlflow.artifactsDestination" -}}
{{- $prefix := trimAll "/" .Values.mlflow.artifactsPrefix -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" .Values.objectStorage.buckets.mlflowArtifacts $prefix -}}
{{- else -}}
{{- printf "s3://%s" .Values.objectStorage.buckets.mlflowArtifacts -}}
{{- end -}}
{{- end -}}

{{/* ---------- Database ---------- */}}

{{- define "opensora.postgresql.fullname" -}}
{{- include "opensora.componentName" (dict "ctx" . "component" "postgresql") -}}
{{- end -}}

{{/* Fails with a clear message unless exactly one database is configured. */}}
{{- define "opensora.database.validate" -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.host -}}
{{- fail "set either postgresql.enabled=true or externalDatabase.host, not both" -}}
{{- end -}}
{{- if not .Values.postgresql.enabled -}}
{{- if not .Values.externalDatabase.host -}}
{{- fail "postgresql.enabled is false: set externalDatabase.host (and externalDatabase.existingSecret)" -}}
{{- end -}}
{{- if not .Values.externalDatabase.existingSecret -}}
{{- fail "externalDatabase.existingSecret is required: the name of a Secret holding the database password" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "opensora.database.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s.%s.svc.%s" (include "opensora.postgresql.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "opensora.database.port" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.externalDatabase.port }}{{- end -}}
{{- end -}}

{{- define "opensora.database.name" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.database }}{{- else -}}{{ .Values.externalDatabase.database }}{{- end -}}
{{- end -}}

{{- define "opensora.database.user" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.username }}{{- else -}}{{ .Values.externalDatabase.username }}{{- end -}}
{{- end -}}

{{- define "opensora.database.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "opensora.postgresql.fullname" .) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "opensora.database.passwordKey" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.passwordKey }}{{- else -}}{{ .Values.externalDatabase.passwordKey }}{{- end -}}
{{- end -}}

{{/*
SQLAlchemy URI without a password: libpq reads it from PGPASSWORD (a secretKeyRef), so no credential
ever appears in a manifest, an argument list or a ConfigMap.
*/}}
{{- define "opensora.database.uri" -}}
{{- printf "postgresql+psycopg2://%s@%s:%s/%s" (include "opensora.database.user" .) (include "opensora.database.host" .) (include "opensora.database.port" .) (include "opensora.database.name" .) -}}
{{- end -}}

{{/* libpq environment of a database client (password from the Secret). */}}
{{- define "opensora.database.env" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "opensora.database.secretName" . }}
      key: {{ include "opensora.database.passwordKey" . }}
- name: PGSSLMODE
  value: {{ if .Values.postgresql.enabled }}disable{{ else }}{{ .Values.externalDatabase.sslMode }}{{ end }}
{{- end -}}

{{/* ---------- Object storage ---------- */}}

{{- define "opensora.seaweedfs.fullname" -}}
{{- include "opensora.componentName" (dict "ctx" . "component" "seaweedfs") -}}
{{- end -}}

{{/* Fails with a clear message when the object storage settings do not fit together. */}}
{{- define "opensora.objectStorage.validate" -}}
{{- if eq .Values.objectStorage.provider "external" -}}
{{- if not .Values.objectStorage.external.endpoint -}}
{{- fail "objectStorage.provider is external: set objectStorage.external.endpoint (for example https://s3.eu-west-1.amazonaws.com)" -}}
{{- end -}}
{{- if not .Values.objectStorage.existingSecret -}}
{{- fail "objectStorage.provider is external: objectStorage.existingSecret must name a Secret with the access key pair" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "opensora.s3.endpoint" -}}
{{- if eq .Values.objectStorage.provider "external" -}}
{{- .Values.objectStorage.external.endpoint | trimSuffix "/" -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "opensora.seaweedfs.fullname" .) .Release.Namespace .Values.clusterDomain .Values.objectStorage.seaweedfs.port -}}
{{- end -}}
{{- end -}}

{{/*
The admin S3 key pair (bucket hook, `helm test`, the SeaweedFS Admin identity): objectStorage.existingSecret,
else the Secret generated as "<fullname>-s3-admin". No pipeline step or training pod gets it.
*/}}
{{- define "opensora.s3.secretName" -}}
{{- default (printf "%s-s3-admin" (include "opensora.fullname" . | trunc 50 | trimSuffix "-")) .Values.objectStorage.existingSecret -}}
{{- end -}}

{{/*
The least-privilege S3 identities: a YAML list of {name, secret, idKey, secretKey, actions, generated}.
SeaweedFS enforces the actions (bucket or bucket/prefix scoped); with provider "external" the chart only names
the Secrets (admin and mlflow use objectStorage.existingSecret, the steps pipelines.s3Secrets) and your S3
service's policies must grant the same. One source of truth for the SeaweedFS config, the generated Secrets,
the Secret each pod mounts and the tests.
*/}}
{{- define "opensora.s3.identities" -}}
{{- $b := .Values.objectStorage.buckets -}}
{{- $evalPrefix := printf "%s/%s/*" $b.checkpoints (trimAll "/" .Values.objectStorage.evalPrefix) -}}
{{- $seaweed := eq .Values.objectStorage.provider "seaweedfs" -}}
{{- $existing := .Values.objectStorage.existingSecret -}}
{{- $full := include "opensora.fullname" . | trunc 50 | trimSuffix "-" -}}
{{- $out := list -}}
{{- $out = append $out (dict "name" "admin" "secret" (include "opensora.s3.secretName" .) "idKey" .Values.objectStorage.accessKeyIdKey "secretKey" .Values.objectStorage.secretAccessKeyKey "generated" (and $seaweed (not $existing)) "actions" (list "Admin" "Read" "List" "Tagging" "Write")) -}}
{{- $mlflowSecret := ternary (printf "%s-s3-mlflow" $full) $existing $seaweed -}}
{{- $out = append $out (dict "name" "mlflow" "secret" $mlflowSecret "idKey" (ternary "AWS_ACCESS_KEY_ID" .Values.objectStorage.accessKeyIdKey $seaweed) "secretKey" (ternary "AWS_SECRET_ACCESS_KEY" .Values.objectStorage.secretAccessKeyKey $seaweed) "generated" $seaweed "actions" (list (printf "Read:%s" $b.mlflowArtifacts) (printf "List:%s" $b.mlflowArtifacts) (printf "Write:%s" $b.mlflowArtifacts) (printf "Tagging:%s" $b.mlflowArtifacts))) -}}
{{- $steps := dict
    "prepare" (list (printf "Read:%s" $b.datasets) (printf "List:%s" $b.datasets) (printf "Write:%s" $b.datasets) (printf "Tagging:%s" $b.datasets))
    "train" (list (printf "Read:%s" $b.datasets) (printf "List:%s" $b.datasets) (printf "Read:%s" $b.checkpoints) (printf "List:%s" $b.checkpoints) (printf "Write:%s" $b.checkpoints) (printf "Tagging:%s" $b.checkpoints))
    "evaluate" (list (printf "Read:%s" $b.checkpoints) (printf "List:%s" $b.checkpoints) (printf "Write:%s" $evalPrefix) (printf "Tagging:%s" $evalPrefix)) -}}
{{- range $name := list "prepare" "train" "evaluate" -}}
{{- $out = append $out (dict "name" $name "secret" (get $.Values.pipelines.s3Secrets $name) "idKey" "AWS_ACCESS_KEY_ID" "secretKey" "AWS_SECRET_ACCESS_KEY" "generated" $seaweed "actions" (get $steps $name)) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* One identity of opensora.s3.identities by name (dict "ctx" . "name" "mlflow"). */}}
{{- define "opensora.s3.identity" -}}
{{- $name := .name -}}
{{- range include "opensora.s3.identities" .ctx | fromYamlArray -}}
{{- if eq .name $name -}}{{- toYaml . -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* Fails unless the generated admin Secret has the key names the bucket hook and `helm test` read. */}}
{{- define "opensora.s3.validateGeneratedKeys" -}}
{{- if and (eq .Values.objectStorage.provider "seaweedfs") (not .Values.objectStorage.existingSecret) -}}
{{- if or (ne .Values.objectStorage.accessKeyIdKey "AWS_ACCESS_KEY_ID") (ne .Values.objectStorage.secretAccessKeyKey "AWS_SECRET_ACCESS_KEY") -}}
{{- fail "the generated S3 Secrets hold AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: keep objectStorage.accessKeyIdKey and secretAccessKeyKey at those names, or set objectStorage.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* S3 client environment of one identity (dict "ctx" . "identity" "admin"): endpoint, region, its key pair. */}}
{{- define "opensora.s3.env" -}}
{{- $id := include "opensora.s3.identity" (dict "ctx" .ctx "name" .identity) | fromYaml -}}
- name: S3_ENDPOINT_URL
  value: {{ include "opensora.s3.endpoint" .ctx | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ include "opensora.s3.endpoint" .ctx | quote }}
- name: AWS_REGION
  value: {{ .ctx.Values.objectStorage.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $id.secret }}
      key: {{ $id.idKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $id.secret }}
      key: {{ $id.secretKey }}
{{- end -}}

{{/* Comma-separated bucket list. */}}
{{- define "opensora.s3.buckets" -}}
{{- $b := .Values.objectStorage.buckets -}}
{{- join "," (list $b.datasets $b.checkpoints $b.mlflowArtifacts) -}}
{{- end -}}

{{/* Port of the external S3 endpoint (explicit port, else 443 for https and 80 for http). */}}
{{- define "opensora.s3.externalPort" -}}
{{- $u := urlParse .Values.objectStorage.external.endpoint -}}
{{- $hostport := splitList ":" $u.host -}}
{{- if gt (len $hostport) 1 -}}
{{- last $hostport -}}
{{- else if eq $u.scheme "http" -}}
80
{{- else -}}
443
{{- end -}}
{{- end -}}

{{/* ---------- Generated secrets ---------- */}}

{{/*
The credential Secrets the hook Job `<fullname>-secrets` creates once (files/generate_once.py): a YAML list
of {name, labels, data: {key: {random: length} | {value: text}}}. Helm never renders them, so no render
depends on a random value or on `lookup`, and an upgrade never changes a stored password.
*/}}
{{- define "opensora.generatedSecrets" -}}
{{- $list := list -}}
{{- if and .Values.postgresql.enabled (not .Values.postgresql.auth.existingSecret) -}}
{{- $list = append $list (dict "name" (include "opensora.database.secretName" .) "component" "postgresql" "data" (dict .Values.postgresql.auth.passwordKey (dict "random" 32))) -}}
{{- end -}}
{{- if and .Values.mlflow.auth.enabled (not .Values.mlflow.auth.existingSecret) -}}
{{- $list = append $list (dict "name" (include "opensora.mlflow.auth.secretName" .) "component" "mlflow" "data" (dict .Values.mlflow.auth.adminPasswordKey (dict "random" 24) .Values.mlflow.auth.flaskSecretKeyKey (dict "random" 48))) -}}
{{- end -}}
{{- if and .Values.mlflow.auth.enabled (not .Values.pipelines.mlflowCredentials.existingSecret) -}}
{{- $list = append $list (dict "name" (include "opensora.mlflow.pipelineSecretName" .) "component" "pipelines" "data" (dict "MLFLOW_TRACKING_USERNAME" (dict "value" .Values.pipelines.mlflowCredentials.username) "MLFLOW_TRACKING_PASSWORD" (dict "random" 32))) -}}
{{- end -}}
{{- include "opensora.s3.validateGeneratedKeys" . -}}
{{- range include "opensora.s3.identities" . | fromYamlArray -}}
{{- if .generated -}}
{{- $list = append $list (dict "name" .secret "component" "seaweedfs" "data" (dict .idKey (dict "random" 20) .secretKey (dict "random" 40))) -}}
{{- end -}}
{{- end -}}
{{- $out := list -}}
{{- range $list -}}
{{- $labels := include "opensora.componentSelectorLabels" (dict "ctx" $ "component" .component) | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/part-of" "opensora-platform" -}}
{{- $_ := set $labels "app.kubernetes.io/managed-by" "opensora-secrets-hook" -}}
{{- $out = append $out (dict "name" .name "labels" $labels "data" .data) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Hook annotations of the secrets hook's resources (dict "weight" "-20"). */}}
{{- define "opensora.secretsHook.annotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}

{{- define "opensora.secretsHook.name" -}}
{{- include "opensora.componentName" (dict "ctx" . "component" "secrets") -}}
{{- end -}}

{{/* ---------- Network policy peers ---------- */}}

{{/* The client label as a selector string ("opensora.io/client=true"). */}}
{{- define "opensora.networkPolicy.clientLabelSelector" -}}
{{- $pairs := list -}}
{{- range $k, $v := .Values.networkPolicy.clientLabel -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Pods allowed to reach MLflow and S3 (a list of NetworkPolicyPeer). */}}
{{- define "opensora.networkPolicy.clients" -}}
- podSelector:
    matchLabels:
      {{- include "opensora.selectorLabels" . | nindent 6 }}
- podSelector:
    matchLabels:
      {{- toYaml .Values.networkPolicy.clientLabel | nindent 6 }}
- podSelector:
    {{- toYaml .Values.networkPolicy.pipelinePodSelector | nindent 4 }}
- podSelector:
    {{- toYaml .Values.networkPolicy.pytorchJobPodSelector | nindent 4 }}
- podSelector:
    {{- toYaml .Values.networkPolicy.trainJobPodSelector | nindent 4 }}
{{- if .Values.networkPolicy.ingressController.enabled }}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.ingressController.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml .Values.networkPolicy.ingressController.podSelector | nindent 4 }}
{{- end }}
{{- with .Values.networkPolicy.extraClients }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Fails unless MLflow is exposed outside the cluster only with auth and TLS (or an explicit override). */}}
{{- define "opensora.mlflow.validateExposure" -}}
{{- $m := .Values.mlflow -}}
{{- if and $m.ingress.enabled (not $m.ingress.dangerouslyAllowInsecure) -}}
{{- if not $m.auth.enabled -}}
{{- fail "mlflow.ingress.enabled with mlflow.auth.enabled=false would publish MLflow without authentication (anyone could delete artifacts, move aliases, register models that run code): enable mlflow.auth, or set mlflow.ingress.dangerouslyAllowInsecure=true if something in front of the Ingress authenticates" -}}
{{- end -}}
{{- if not $m.ingress.tls -}}
{{- fail "mlflow.ingress.enabled without mlflow.ingress.tls would send MLflow passwords and artifacts in clear text: set mlflow.ingress.tls (secretName + hosts), or set mlflow.ingress.dangerouslyAllowInsecure=true if TLS ends before the Ingress" -}}
{{- end -}}
{{- end -}}
{{- if and (has $m.service.type (list "LoadBalancer" "NodePort")) (not $m.service.dangerouslyAllowInsecure) -}}
{{- fail (printf "mlflow.service.type=%s exposes MLflow's plain HTTP outside the cluster: use mlflow.ingress with TLS, or set mlflow.service.dangerouslyAllowInsecure=true if your load balancer terminates TLS (and keep mlflow.auth.enabled)" $m.service.type) -}}
{{- end -}}
{{- end -}}

{{/* Egress rule to the Kubernetes API server (networkPolicy.kubernetesApi). */}}
{{- define "opensora.networkPolicy.kubeApiRule" -}}
- to:
    {{- range .Values.networkPolicy.kubernetesApi.cidrs }}
    - ipBlock:
        cidr: {{ . }}
        {{- if eq . "0.0.0.0/0" }}
        except: [169.254.169.254/32]
        {{- end }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.kubernetesApi.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end -}}
