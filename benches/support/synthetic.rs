//! Synthetic config repositories for benchmarks.
//!
//! Shared by `benches/load_render.rs` and `examples/gen_synthetic_repo.rs` (both include this
//! file with `#[path]`), so the bench and `scripts/bench.sh` measure the same input.
//!
//! A generated repository has:
//! - `bowline.yaml`: two environments, `staging` (one cluster) and `production` (two clusters
//!   in waves 1 and 2), repository defaults and a GitHub forge;
//! - `pipelines/canary-release.yaml`: a template with parameters (one required) and six stages
//!   (rolling deploy to staging, checkPreconditions, manualJudgment, canary deploy,
//!   canaryAnalysis, promote);
//! - `canary/http-service.yaml`: one canary config with four metrics in three groups;
//! - `apps/<app>/app.yaml` for each app: shared parameters, per-environment parameters, image
//!   and namespace overrides, pipeline variables and the canary config;
//! - `apps/<app>/manifests/`: six MiniJinja-templated manifests (Deployment with probes,
//!   resources and env from `parameters.*`, Service, ConfigMap, HorizontalPodAutoscaler,
//!   Ingress, ServiceMonitor).
//!
//! Everything is deterministic: apps differ by index (team, replicas, ports, overrides), never
//! by chance, so two runs generate byte-identical repositories.

use std::fs;
use std::io;
use std::path::Path;

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Applications.
    pub apps: usize,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes a repository of `apps` applications into `root` (created when missing).
pub fn generate(root: &Path, apps: usize) -> io::Result<Summary> {
    let mut writer = Writer {
        summary: Summary {
            apps,
            files: 0,
            bytes: 0,
        },
    };
    fs::create_dir_all(root)?;
    writer.write(&root.join("bowline.yaml"), REPOSITORY)?;
    fs::create_dir_all(root.join("pipelines"))?;
    writer.write(&root.join("pipelines/canary-release.yaml"), PIPELINE)?;
    fs::create_dir_all(root.join("canary"))?;
    writer.write(&root.join("canary/http-service.yaml"), CANARY)?;
    for i in 0..apps {
        let name = app_name(i);
        let dir = root.join("apps").join(&name);
        let manifests = dir.join("manifests");
        fs::create_dir_all(&manifests)?;
        writer.write(&dir.join("app.yaml"), &application(i, &name))?;
        for (file, text) in MANIFESTS {
            writer.write(&manifests.join(file), text)?;
        }
    }
    Ok(writer.summary)
}

struct Writer {
    summary: Summary,
}

impl Writer {
    fn write(&mut self, path: &Path, text: &str) -> io::Result<()> {
        fs::write(path, text)?;
        self.summary.files += 1;
        self.summary.bytes += text.len() as u64;
        Ok(())
    }
}

/// A made-up but well-formed image digest (64 hex digits), distinct per app.
fn digest(i: usize) -> String {
    // splitmix64, so digests look random yet are reproducible.
    let mut state = i as u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..4).map(|_| format!("{:016x}", next())).collect()
}

fn app_name(i: usize) -> String {
    format!("svc-{i:04}")
}

/// `apps/<name>/app.yaml` of app number `i`.
fn application(i: usize, name: &str) -> String {
    let team = format!("team-{:02}", i % 12);
    let tier = ["frontend", "backend", "worker"][i % 3];
    let port = 8080 + (i % 3) * 10;
    let minor = i % 17;
    let staging_replicas = 1 + i % 2;
    let production_replicas = 2 + i % 4;
    let max_replicas = production_replicas * 4;
    // Every fourth app runs in its team's namespace in production; every fifth is pinned by
    // digest there; the others get an older tag than staging.
    let production_namespace = if i % 4 == 0 {
        format!("      namespace: {team}\n")
    } else {
        String::new()
    };
    let production_image = if i % 5 == 0 {
        format!("      image:\n        digest: sha256:{}\n", digest(i))
    } else {
        format!("      image:\n        tag: \"1.{minor}.3\"\n")
    };
    let analysis_lifetime = if i % 2 == 0 {
        "      analysisLifetime: 45m\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: bowline/v1
kind: Application
metadata:
  name: {name}
  labels:
    team: {team}
    tier: {tier}
spec:
  description: Synthetic {tier} service number {i}, owned by {team}.
  image:
    repository: ghcr.io/acme/{name}
    tag: "1.{minor}.4"
  parameters:
    replicas: 2
    port: {port}
    metricsPort: 9090
    logLevel: info
    resources:
      requests:
        cpu: 100m
        memory: 128Mi
      limits:
        cpu: 500m
        memory: 512Mi
    probes:
      readinessPath: /ready
      livenessPath: /healthz
      initialDelaySeconds: 15
    autoscaling:
      minReplicas: 2
      maxReplicas: 6
      targetCPUUtilization: 75
    ingress:
      className: nginx
      host: {name}.staging.acme.example
      path: /
      maxBodySize: 8m
      tls: false
    monitoring:
      interval: 30s
    env:
      FEATURE_FLAGS: search,checkout-v2
      HTTP_TIMEOUT: 5s
      UPSTREAM_URL: http://svc-{upstream:04}.{team}.svc.cluster.local
    config:
      CACHE_TTL: 300
      MAX_CONNECTIONS: 64
      REGION: eu-central-1
  environments:
    staging:
      parameters:
        replicas: {staging_replicas}
        logLevel: debug
        autoscaling:
          maxReplicas: 3
    production:
{production_namespace}{production_image}      parameters:
        replicas: {production_replicas}
        resources:
          requests:
            cpu: 250m
            memory: 256Mi
          limits:
            cpu: "1"
            memory: 1Gi
        autoscaling:
          minReplicas: {production_replicas}
          maxReplicas: {max_replicas}
        ingress:
          host: {name}.acme.example
          tls: true
        monitoring:
          interval: 15s
        config:
          MAX_CONNECTIONS: 256
  syncPolicy:
    automated: true
    prune: true
    selfHeal: {self_heal}
  pipeline:
    template: canary-release
    variables:
      team: {team}
      canaryWeight: {weight}
{analysis_lifetime}  canary:
    config: http-service
  approvers:
    - "@acme/{team}"
    - release-bot
"#,
        upstream = (i + 1) % 1000,
        self_heal = i % 3 != 0,
        weight = 5 + (i % 4) * 5,
    )
}

const REPOSITORY: &str = r#"apiVersion: bowline/v1
kind: Repository
metadata:
  name: synthetic
  description: Generated for benchmarks by benches/support/synthetic.rs.
spec:
  environments:
    - name: staging
      namespace: staging
      clusters:
        - name: staging-eu1
          context: gke_acme_europe-west1_staging
      prometheus:
        url: http://prometheus.staging.acme.example:9090
    - name: production
      namespace: production
      clusters:
        - name: prod-eu1
          context: gke_acme_europe-west1_prod
          wave: 1
        - name: prod-us1
          context: gke_acme_us-east1_prod
          wave: 2
      prometheus:
        url: http://prometheus.prod.acme.example:9090
      # Teams may run their apps in their own namespaces in production.
      destinations:
        namespaces: [production, "team-*"]
  defaults:
    syncPolicy:
      automated: true
      prune: false
      selfHeal: false
    pipeline: canary-release
    approvers:
      - "@acme/sre"
  forge:
    github:
      owner: acme
      repository: deploy-config
      branch: main
"#;

const PIPELINE: &str = r#"apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: canary-release
spec:
  description: Rolling deploy to staging, approval, canary with analysis in production, promote.
  parameters:
    - name: team
      type: string
      description: Owning team, shown to approvers.
    - name: canaryWeight
      type: integer
      default: 10
      description: Share of production traffic sent to the canary, in percent.
    - name: canaryReplicas
      type: integer
      default: 1
    - name: analysisLifetime
      type: duration
      default: 30m
    - name: rolloutTimeout
      type: duration
      default: 15m
  executionWindows:
    - days: [mon, tue, wed, thu]
      start: "08:00"
      end: "17:00"
      timezone: Europe/Berlin
      environments: [production]
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: rolling
      timeout: "{{ parameters.rolloutTimeout }}"
      rolling:
        maxSurge: 25%
        maxUnavailable: 0
    - name: verify-staging
      type: checkPreconditions
      dependsOn: [deploy-staging]
      preconditions:
        - expression: 'stages["deploy-staging"].status == "succeeded"'
          message: the staging rollout must succeed before production
    - name: approve-production
      type: manualJudgment
      dependsOn: [verify-staging]
      timeout: 24h
      instructions: "Promote {{ app.name }} to production? Owner: {{ parameters.team }}"
    - name: deploy-canary
      type: deploy
      environment: production
      strategy: canary
      dependsOn: [approve-production]
      timeout: "{{ parameters.rolloutTimeout }}"
      canary:
        replicas: "{{ parameters.canaryReplicas }}"
        weight: "{{ parameters.canaryWeight }}"
    - name: analyze-canary
      type: canaryAnalysis
      environment: production
      dependsOn: [deploy-canary]
      lifetime: "{{ parameters.analysisLifetime }}"
      scoreThresholds:
        marginal: 70
        pass: 90
    - name: promote-production
      type: promote
      environment: production
      dependsOn: [analyze-canary]
"#;

const CANARY: &str = r#"apiVersion: bowline/v1
kind: CanaryConfig
metadata:
  name: http-service
  description: Errors, latency and saturation of an HTTP service.
spec:
  judge: NetflixACAJudge-v1.0
  templates:
    workload: 'namespace="{{ location }}", app_kubernetes_io_name="{{ scope }}"'
  metrics:
    - name: error-rate
      groups: [errors]
      query: 'sum(rate(http_requests_total{ {{ templates.workload }}, code=~"5.." }[1m])) / sum(rate(http_requests_total{ {{ templates.workload }} }[1m]))'
      direction: increase
      critical: true
      mustHaveData: true
      effectSize:
        measure: meanRatio
        allowedIncrease: 1.1
        criticalIncrease: 1.5
    - name: latency-p99
      groups: [latency]
      query: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{ {{ templates.workload }} }[1m])))'
      direction: increase
      nanStrategy: remove
      outliers:
        strategy: remove
        outlierFactor: 3.0
    - name: cpu
      groups: [saturation]
      query: 'sum(rate(container_cpu_usage_seconds_total{ {{ templates.workload }} }[1m]))'
      direction: increase
    - name: memory
      groups: [saturation]
      query: 'sum(container_memory_working_set_bytes{ {{ templates.workload }} })'
      direction: increase
      nanStrategy: replace
  classifier:
    groupWeights:
      errors: 50
      latency: 30
      saturation: 20
    scoreThresholds:
      marginal: 75
      pass: 95
  analysis:
    step: 1m
    lifetime: 30m
    interval: 10m
    lookback: growing
    delay: 2m
"#;

/// The six manifest templates of every app, by file name.
const MANIFESTS: [(&str, &str); 6] = [
    ("configmap.yaml", CONFIGMAP),
    ("deployment.yaml", DEPLOYMENT),
    ("hpa.yaml", HPA),
    ("ingress.yaml", INGRESS),
    ("service.yaml", SERVICE),
    ("servicemonitor.yaml", SERVICE_MONITOR),
];

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ app.name }}
  labels:
    app.kubernetes.io/name: {{ app.name }}
    app.kubernetes.io/version: "{{ app.image.tag }}"
    app.kubernetes.io/part-of: {{ app.labels.team }}
    tier: {{ app.labels.tier }}
spec:
  replicas: {{ parameters.replicas }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ app.name }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ app.name }}
        app.kubernetes.io/part-of: {{ app.labels.team }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "{{ parameters.metricsPort }}"
    spec:
      serviceAccountName: {{ app.name }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        fsGroup: 10001
      containers:
        - name: {{ app.name }}
          image: {{ image }}
          imagePullPolicy: IfNotPresent
          ports:
            - name: http
              containerPort: {{ parameters.port }}
            - name: metrics
              containerPort: {{ parameters.metricsPort }}
          env:
            - name: APP_ENV
              value: {{ env.name }}
            - name: POD_NAMESPACE
              value: {{ namespace }}
            - name: LOG_LEVEL
              value: "{{ parameters.logLevel }}"
{%- for key, value in parameters.env | dictsort %}
            - name: {{ key }}
              value: "{{ value }}"
{%- endfor %}
          envFrom:
            - configMapRef:
                name: {{ app.name }}-config
          resources:
            requests:
              cpu: "{{ parameters.resources.requests.cpu }}"
              memory: "{{ parameters.resources.requests.memory }}"
            limits:
              cpu: "{{ parameters.resources.limits.cpu }}"
              memory: "{{ parameters.resources.limits.memory }}"
          readinessProbe:
            httpGet:
              path: {{ parameters.probes.readinessPath }}
              port: http
            initialDelaySeconds: 5
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: {{ parameters.probes.livenessPath }}
              port: http
            initialDelaySeconds: {{ parameters.probes.initialDelaySeconds }}
            periodSeconds: 20
            failureThreshold: 3
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ app.name }}
  labels:
    app.kubernetes.io/name: {{ app.name }}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {{ app.name }}
  ports:
    - name: http
      port: 80
      targetPort: http
    - name: metrics
      port: {{ parameters.metricsPort }}
      targetPort: metrics
"#;

const CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ app.name }}-config
  labels:
    app.kubernetes.io/name: {{ app.name }}
data:
  APP_NAME: {{ app.name }}
  ENVIRONMENT: {{ env.name }}
  CLUSTERS: "{{ env.clusters | join(',') }}"
{%- for key, value in parameters.config | dictsort %}
  {{ key }}: "{{ value }}"
{%- endfor %}
"#;

const HPA: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ app.name }}
  labels:
    app.kubernetes.io/name: {{ app.name }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ app.name }}
  minReplicas: {{ parameters.autoscaling.minReplicas }}
  maxReplicas: {{ parameters.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ parameters.autoscaling.targetCPUUtilization }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
"#;

const INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ app.name }}
  labels:
    app.kubernetes.io/name: {{ app.name }}
  annotations:
    nginx.ingress.kubernetes.io/proxy-body-size: "{{ parameters.ingress.maxBodySize }}"
{%- if parameters.ingress.tls %}
    cert-manager.io/cluster-issuer: letsencrypt
{%- endif %}
spec:
  ingressClassName: {{ parameters.ingress.className }}
  rules:
    - host: {{ parameters.ingress.host }}
      http:
        paths:
          - path: {{ parameters.ingress.path }}
            pathType: Prefix
            backend:
              service:
                name: {{ app.name }}
                port:
                  name: http
{%- if parameters.ingress.tls %}
  tls:
    - hosts:
        - {{ parameters.ingress.host }}
      secretName: {{ app.name }}-tls
{%- endif %}
"#;

const SERVICE_MONITOR: &str = r#"apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ app.name }}
  labels:
    app.kubernetes.io/name: {{ app.name }}
    release: prometheus
spec:
  namespaceSelector:
    matchNames:
      - {{ namespace }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ app.name }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ parameters.monitoring.interval }}
      scrapeTimeout: 10s
"#;
