//! The typed model of every document kind of a config repository (`apiVersion: bowline/v1`).
//!
//! Documents are checked against their JSON Schema before they are deserialized into these
//! types, so the types can stay plain; cross-document rules live in `config::validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `metadata` of every kind.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Metadata {
    /// Name, unique among documents of the kind.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A duration written as `30s`, `10m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Parses `30s`, `10m`, `1h30m`, `2d`, `250ms`.
    pub fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(Duration)
            .map_err(|e| format!("invalid duration \"{text}\": {e}"))
    }

    /// A duration of whole minutes.
    pub const fn from_mins(mins: u64) -> Self {
        Duration(StdDuration::from_secs(mins * 60))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------- Repository

/// `bowline.yaml`: environments, defaults and forge settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Repository {
    /// Name and description.
    pub metadata: Metadata,
    /// Contents.
    pub spec: RepositorySpec,
}

/// The `spec` of [`Repository`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// Environments in promotion order.
    pub environments: Vec<Environment>,
    /// Values applications inherit.
    #[serde(default)]
    pub defaults: Defaults,
    /// Where results are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<Forge>,
    /// Settings of policies by policy id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, PolicySetting>,
}

/// How a policy runs in this repository (`bowline.yaml` `spec.policies.<id>`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySetting {
    /// Severity everywhere (`None`: the policy's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<PolicyLevel>,
    /// Severity per environment, over `severity`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, PolicyLevel>,
    /// Applications the policy does not apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_apps: Vec<String>,
}

impl PolicySetting {
    /// The level set for `environment`, if any.
    pub fn level_in(&self, environment: &str) -> Option<PolicyLevel> {
        self.environments
            .get(environment)
            .copied()
            .or(self.severity)
    }
}

/// A policy's severity as the repository sets it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyLevel {
    /// Fails validation and plans.
    Deny,
    /// Reported as a warning.
    Warn,
    /// Not run.
    Off,
}

/// An application exempt from a policy (`app.yaml` `spec.policyExceptions[]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicyException {
    /// Policy id.
    pub policy: String,
    /// Why.
    pub reason: String,
    /// Only in these environments (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

/// An environment: namespace, clusters (in waves) and its Prometheus.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Environment name.
    pub name: String,
    /// Default namespace of applications.
    pub namespace: String,
    /// Clusters, deployed wave by wave.
    pub clusters: Vec<Cluster>,
    /// Prometheus queried by canary analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusRef>,
    /// Largest share (percent) of the environment's bowline-managed objects that removing
    /// applications in one commit deletes without an explicit approval (`None`: the default,
    /// [`DEFAULT_MAX_DELETE_PERCENT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_percent: Option<u8>,
    /// Where its applications may deploy (see [`crate::destination`]).
    #[serde(default, skip_serializing_if = "DestinationsSpec::is_default")]
    pub destinations: DestinationsSpec,
}

/// Default of [`Environment::max_delete_percent`].
pub const DEFAULT_MAX_DELETE_PERCENT: u8 = 50;

impl Environment {
    /// Largest share (percent) of the environment's managed objects one commit's app
    /// removals delete without an explicit approval.
    pub fn max_delete_percent(&self) -> u8 {
        self.max_delete_percent
            .unwrap_or(DEFAULT_MAX_DELETE_PERCENT)
            .min(100)
    }
}

/// `destinations` of an environment: the namespaces and cluster-scoped kinds its
/// applications may reach. Not a policy: nothing in an application can widen it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationsSpec {
    /// Namespace globs (`shop-*`); when empty, only the environment's `namespace`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Cluster-scoped kinds applications may manage; when empty, none but the Namespace
    /// objects of the allowed namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_resources: Vec<GroupKind>,
}

impl DestinationsSpec {
    /// True when nothing is set (the defaults apply).
    pub fn is_default(&self) -> bool {
        self.namespaces.is_empty() && self.cluster_resources.is_empty()
    }
}

/// An API group and kind, either of which may be a glob (`*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct GroupKind {
    /// API group, `""` for the core group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl Environment {
    /// The clusters grouped by wave, lowest wave first.
    pub fn waves(&self) -> Vec<(u32, Vec<&Cluster>)> {
        let mut waves: BTreeMap<u32, Vec<&Cluster>> = BTreeMap::new();
        for cluster in &self.clusters {
            waves.entry(cluster.wave).or_default().push(cluster);
        }
        waves.into_iter().collect()
    }
}

/// One Kubernetes cluster of an environment.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
    /// kubeconfig context.
    pub context: String,
    /// Deployment wave (1 first).
    #[serde(default = "default_wave")]
    pub wave: u32,
}

fn default_wave() -> u32 {
    1
}

/// Where an environment's Prometheus lives.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PrometheusRef {
    /// Base URL of the HTTP API.
    pub url: String,
}

/// Repository-wide defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    /// Default sync policy.
    #[serde(default)]
    pub sync_policy: SyncPolicySpec,
    /// Default pipeline template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Default approvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

/// GitHub settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Forge {
    /// The GitHub repository of the config repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubForge>,
}

/// A GitHub repository.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GithubForge {
    /// Organization or user.
    pub owner: String,
    /// Repository name.
    pub repository: String,
    /// API base URL.
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// Tracked branch.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Whether pull requests from forks are planned against the live clusters when their
    /// author has write access (default false: forks are planned against an empty cluster,
    /// and a collaborator's `/bowline plan` runs the live plan).
    #[serde(default)]
    pub live_plan_forks: bool,
}

fn default_github_api() -> String {
    "https://api.github.com".to_string()
}

fn default_branch() -> String {
    "main".to_string()
}

/// A sync policy as written: every field optional, filled from defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicySpec {
    /// See [`SyncPolicy::automated`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<bool>,
    /// See [`SyncPolicy::prune`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// See [`SyncPolicy::self_heal`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
    /// See [`SyncPolicy::force_conflicts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_conflicts: Option<bool>,
    /// See [`SyncPolicy::create_namespace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
}

/// The effective sync policy of an application.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Start pipelines on changes of the tracked branch.
    pub automated: bool,
    /// Delete objects no longer rendered.
    pub prune: bool,
    /// Re-apply on drift.
    pub self_heal: bool,
    /// Take over fields owned by other field managers instead of failing with a conflict.
    pub force_conflicts: bool,
    /// Create the environment's namespace in a cluster where it is missing (server-side apply
    /// with bowline's labels) before applying objects; when false, a sync into a missing
    /// namespace fails naming it.
    pub create_namespace: bool,
}

impl SyncPolicySpec {
    /// This policy with unset fields taken from `fallback`, then from the built-in defaults
    /// (automated, no prune, no self-heal, no forced conflicts, namespaces created).
    pub fn resolve(&self, fallback: &SyncPolicySpec) -> SyncPolicy {
        SyncPolicy {
            automated: self.automated.or(fallback.automated).unwrap_or(true),
            prune: self.prune.or(fallback.prune).unwrap_or(false),
            self_heal: self.self_heal.or(fallback.self_heal).unwrap_or(false),
            force_conflicts: self
                .force_conflicts
                .or(fallback.force_conflicts)
                .unwrap_or(false),
            create_namespace: self
                .create_namespace
                .or(fallback.create_namespace)
                .unwrap_or(true),
        }
    }
}

// ---------------------------------------------------------------- Application

/// `apps/<name>/app.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Application {
    /// Name and labels.
    pub metadata: Metadata,
    /// Contents.
    pub spec: ApplicationSpec,
}

/// The `spec` of [`Application`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Container image (`None`: the manifests carry their own images, and templates that use
    /// `image` fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Shared template parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Environments deployed to, with overrides.
    pub environments: BTreeMap<String, Option<AppEnvironment>>,
    /// Sync policy (defaults from the repository).
    #[serde(default)]
    pub sync_policy: SyncPolicySpec,
    /// Pipeline template and variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
    /// Canary config reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRef>,
    /// Who may resolve manual judgments: GitHub logins or `@org/team` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Whether a pull request's author may approve the judgments of the executions delivering
    /// their own change (default false: another approver must).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
    /// Fields left out of live diffs and not claimed when applying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_differences: Vec<IgnoreDifference>,
    /// Policies the application is exempt from, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_exceptions: Vec<AppPolicyException>,
}

impl Application {
    /// The namespace the application deploys to in `environment`: its own override for that
    /// environment, else the environment's namespace.
    pub fn namespace_in(&self, environment: &Environment) -> String {
        self.spec
            .environments
            .get(&environment.name)
            .and_then(|e| e.as_ref())
            .and_then(|e| e.namespace.clone())
            .unwrap_or_else(|| environment.namespace.clone())
    }
}

/// One `ignoreDifferences` rule: fields of matching objects that bowline neither compares nor
/// claims, given as JSON pointers or as the fields owned by other field managers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreDifference {
    /// API group (`apps`, `""` for core); any group when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the objects.
    pub kind: String,
    /// Only the object of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only objects in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Fields to ignore, as JSON pointers (`/spec/replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_pointers: Vec<String>,
    /// Ignore every field these field managers own on the live object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields_managers: Vec<String>,
}

/// A container image reference.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Image {
    /// Repository such as `ghcr.io/acme/api`.
    #[serde(default)]
    pub repository: String,
    /// Tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Digest (`sha256:...`), preferred over the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Image {
    /// The image of an app in an environment: the app's, with the environment's override
    /// over it (`None` when neither sets one).
    pub fn effective(base: Option<&Image>, over: Option<&ImageOverride>) -> Option<Image> {
        match (base, over) {
            (Some(base), Some(over)) => Some(base.overlay(over)),
            (Some(base), None) => Some(base.clone()),
            (None, Some(over)) => Some(Image::default().overlay(over)),
            (None, None) => None,
        }
    }

    /// `repository@digest` when a digest is set, else `repository:tag`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.repository),
            (None, Some(t)) => format!("{}:{t}", self.repository),
            (None, None) => self.repository.clone(),
        }
    }

    /// This image with the fields `over` sets replacing ours.
    pub fn overlay(&self, over: &ImageOverride) -> Image {
        let mut image = self.clone();
        if let Some(r) = &over.repository {
            image.repository = r.clone();
        }
        if let Some(t) = &over.tag {
            image.tag = Some(t.clone());
            if over.digest.is_none() {
                image.digest = None;
            }
        }
        if let Some(d) = &over.digest {
            image.digest = Some(d.clone());
        }
        image
    }
}

/// Per-environment image fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ImageOverride {
    /// Replaces the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Replaces the tag (and drops a shared digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Replaces the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Per-environment values of an application.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct AppEnvironment {
    /// Namespace override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Image override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageOverride>,
    /// Parameters merged over the shared ones.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// The kustomization this environment builds, in an app built with Kustomize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeSource>,
}

/// Which kustomization an environment builds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct KustomizeSource {
    /// Directory under `manifests/` holding the kustomization (default: `overlays/<env>`,
    /// else `<env>`, else `manifests/` itself).
    pub path: String,
}

/// Which pipeline template an application runs, with its variables.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PipelineRef {
    /// Template name.
    pub template: String,
    /// Values of the template's parameters.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

/// Which canary config an application uses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CanaryRef {
    /// Config name.
    pub config: String,
}

// ---------------------------------------------------------------- PipelineTemplate

/// `pipelines/<name>.yaml`. Stages are kept as written: they may hold `{{ parameters.x }}`
/// expressions and become typed [`Stage`]s once instantiated for an application.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PipelineTemplate {
    /// Name.
    pub metadata: Metadata,
    /// Contents.
    pub spec: PipelineTemplateSpec,
}

/// The `spec` of [`PipelineTemplate`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTemplateSpec {
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Declared parameters.
    #[serde(default)]
    pub parameters: Vec<TemplateParameter>,
    /// When stages may start.
    #[serde(default)]
    pub execution_windows: Vec<ExecutionWindow>,
    /// Stages as written.
    pub stages: Vec<Value>,
}

/// A declared parameter of a pipeline template.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TemplateParameter {
    /// Name.
    pub name: String,
    /// Value type.
    #[serde(default, rename = "type")]
    pub kind: ParameterType,
    /// Default; none makes the parameter required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Help text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Value types of template parameters.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    /// Any string.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
    /// A duration string such as `30m`.
    Duration,
}

impl ParameterType {
    /// Checks a value against this type; the error says what was expected.
    pub fn check(self, value: &Value) -> Result<(), String> {
        let ok = match self {
            ParameterType::String => value.is_string(),
            ParameterType::Integer => value.is_i64() || value.is_u64(),
            ParameterType::Number => value.is_number(),
            ParameterType::Boolean => value.is_boolean(),
            ParameterType::Duration => {
                return match value.as_str() {
                    Some(s) => Duration::parse(s).map(|_| ()),
                    None => Err(format!(
                        "expected a duration such as \"30m\", found {value}"
                    )),
                };
            }
        };
        if ok {
            Ok(())
        } else {
            let article = if self == ParameterType::Integer {
                "an"
            } else {
                "a"
            };
            Err(format!(
                "expected {article} {}, found {value}",
                self.as_str()
            ))
        }
    }

    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Number => "number",
            ParameterType::Boolean => "boolean",
            ParameterType::Duration => "duration",
        }
    }
}

/// A weekly time window in which stages may start.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ExecutionWindow {
    /// Weekdays (`mon` ... `sun`).
    pub days: Vec<String>,
    /// Local start time `HH:MM`.
    pub start: String,
    /// Local end time `HH:MM`.
    pub end: String,
    /// IANA time zone.
    pub timezone: String,
    /// Environments restricted (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

/// The fields every stage has, read without instantiating the template (they may not use
/// parameters).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageHeader {
    /// Stage name.
    pub name: String,
    /// Stage type.
    #[serde(rename = "type")]
    pub kind: StageType,
    /// Target environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// Upstream stages.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// The stage types.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum StageType {
    /// Apply the rendered manifests with a strategy.
    Deploy,
    /// Compare canary and baseline metrics.
    CanaryAnalysis,
    /// Wait for an approver.
    ManualJudgment,
    /// Sleep.
    Wait,
    /// Evaluate expressions.
    CheckPreconditions,
    /// Call an HTTP endpoint.
    Webhook,
    /// Make the canary / green version the stable one.
    Promote,
    /// Return to the previous stable version.
    Rollback,
    /// Delete what bowline created for an application removed from the tracked branch.
    /// Internal: only removal executions have it (pipeline templates cannot use it).
    Remove,
}

impl StageType {
    /// Every stage type.
    pub const ALL: [StageType; 9] = [
        StageType::Deploy,
        StageType::CanaryAnalysis,
        StageType::ManualJudgment,
        StageType::Wait,
        StageType::CheckPreconditions,
        StageType::Webhook,
        StageType::Promote,
        StageType::Rollback,
        StageType::Remove,
    ];

    /// The stage type named `name` as in YAML, if there is one.
    pub fn parse(name: &str) -> Option<StageType> {
        StageType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            StageType::Deploy => "deploy",
            StageType::CanaryAnalysis => "canaryAnalysis",
            StageType::ManualJudgment => "manualJudgment",
            StageType::Wait => "wait",
            StageType::CheckPreconditions => "checkPreconditions",
            StageType::Webhook => "webhook",
            StageType::Promote => "promote",
            StageType::Rollback => "rollback",
            StageType::Remove => "remove",
        }
    }
}

/// A stage of a pipeline instantiated for one application (parameters filled in).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Target environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Upstream stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Run condition expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Maximum run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Attempts after a failed one, with exponential backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Type and type-specific settings.
    #[serde(flatten)]
    pub action: StageAction,
}

/// What a stage does, by type.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StageAction {
    /// See [`StageType::Deploy`].
    Deploy(DeployStage),
    /// See [`StageType::CanaryAnalysis`].
    CanaryAnalysis(CanaryAnalysisStage),
    /// See [`StageType::ManualJudgment`].
    ManualJudgment(ManualJudgmentStage),
    /// See [`StageType::Wait`].
    Wait(WaitStage),
    /// See [`StageType::CheckPreconditions`].
    CheckPreconditions(CheckPreconditionsStage),
    /// See [`StageType::Webhook`].
    Webhook(WebhookStage),
    /// See [`StageType::Promote`].
    Promote {},
    /// See [`StageType::Rollback`].
    Rollback {},
    /// See [`StageType::Remove`].
    Remove {},
}

impl StageAction {
    /// The stage type.
    pub fn stage_type(&self) -> StageType {
        match self {
            StageAction::Deploy(_) => StageType::Deploy,
            StageAction::CanaryAnalysis(_) => StageType::CanaryAnalysis,
            StageAction::ManualJudgment(_) => StageType::ManualJudgment,
            StageAction::Wait(_) => StageType::Wait,
            StageAction::CheckPreconditions(_) => StageType::CheckPreconditions,
            StageAction::Webhook(_) => StageType::Webhook,
            StageAction::Promote {} => StageType::Promote,
            StageAction::Rollback {} => StageType::Rollback,
            StageAction::Remove {} => StageType::Remove,
        }
    }
}

/// Deployment strategies.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Replace pods gradually.
    Rolling,
    /// Run the new version next to the old, then switch.
    BlueGreen,
    /// Run a canary and a baseline next to the stable version.
    Canary,
}

impl Strategy {
    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blueGreen",
            Strategy::Canary => "canary",
        }
    }
}

/// A count or a percentage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrPercent {
    /// A count.
    Int(u32),
    /// `"25%"`.
    Percent(String),
}

/// Settings of a deploy stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeployStage {
    /// Strategy.
    pub strategy: Strategy,
    /// Rolling settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling: Option<RollingSettings>,
    /// Blue/green settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenSettings>,
    /// Canary settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryDeploySettings>,
}

/// Rolling update settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollingSettings {
    /// Extra pods during the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// Pods that may be unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// Blue/green settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenSettings {
    /// Service routing to the new color before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Switch as soon as healthy.
    #[serde(default)]
    pub auto_promote: bool,
    /// Time the old color keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<Duration>,
}

/// Canary deploy settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryDeploySettings {
    /// Replicas of canary and baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Traffic share in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
}

/// Settings of a canaryAnalysis stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysisStage {
    /// Config name (default: the app's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_config: Option<String>,
    /// Lifetime override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Duration>,
    /// Interval override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Threshold override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_thresholds: Option<ScoreThresholds>,
}

/// Settings of a manualJudgment stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManualJudgmentStage {
    /// Shown to approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Who may decide (default: the app's approvers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Choices offered to the approver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Outcome when the timeout passes without a decision.
    #[serde(default)]
    pub on_timeout: TimeoutOutcome,
}

/// What a manual judgment becomes when nobody decides in time.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TimeoutOutcome {
    /// The stage succeeds.
    Approve,
    /// The stage fails (the default).
    #[default]
    Reject,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Settings of a wait stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct WaitStage {
    /// How long.
    pub duration: Duration,
}

/// Settings of a checkPreconditions stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CheckPreconditionsStage {
    /// Expressions that must hold.
    pub preconditions: Vec<Precondition>,
}

/// One precondition.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Precondition {
    /// Expression (MiniJinja syntax).
    pub expression: String,
    /// Reported when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Settings of a webhook stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStage {
    /// URL.
    pub url: String,
    /// Method (default POST).
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Status codes counted as success (empty: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    /// Retries on connection errors and 5xx.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_method() -> String {
    "POST".to_string()
}

fn default_retries() -> u32 {
    3
}

// ---------------------------------------------------------------- CanaryConfig

/// `canary/<name>.yaml` (field names fixed by the canary judge specification).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CanaryConfig {
    /// Name.
    pub metadata: Metadata,
    /// Contents.
    pub spec: CanaryConfigSpec,
}

/// The `spec` of [`CanaryConfig`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryConfigSpec {
    /// Judge name.
    #[serde(default = "default_judge")]
    pub judge: String,
    /// Named PromQL fragments.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Metrics.
    pub metrics: Vec<CanaryMetric>,
    /// Weights and thresholds.
    pub classifier: Classifier,
    /// Live analysis timing.
    #[serde(default)]
    pub analysis: AnalysisSettings,
}

fn default_judge() -> String {
    "NetflixACAJudge-v1.0".to_string()
}

/// One canary metric.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name, unique in the config.
    pub name: String,
    /// Groups scored in.
    pub groups: Vec<String>,
    /// PromQL template.
    pub query: String,
    /// Which change fails.
    #[serde(default)]
    pub direction: Direction,
    /// Missing point handling.
    #[serde(default)]
    pub nan_strategy: NanStrategy,
    /// Fails the canary on failure.
    #[serde(default)]
    pub critical: bool,
    /// Missing data fails the metric.
    #[serde(default)]
    pub must_have_data: bool,
    /// Reported, not scored.
    #[serde(default)]
    pub muted: bool,
    /// Effect size gates.
    #[serde(default)]
    pub effect_size: EffectSize,
    /// Outlier handling.
    #[serde(default)]
    pub outliers: Outliers,
}

/// Direction of a failing change.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Only increases fail.
    Increase,
    /// Only decreases fail.
    Decrease,
    /// Both fail.
    #[default]
    Either,
}

/// Handling of missing (NaN) points.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NanStrategy {
    /// Drop them.
    #[default]
    Remove,
    /// Count them as 0.
    Replace,
}

/// Effect size measure.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EffectMeasure {
    /// Ratio of means.
    #[default]
    MeanRatio,
    /// Common-language effect size.
    Cles,
}

/// Effect size gates; unset bounds default per measure (1.0 for meanRatio, 0.5 for cles).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectSize {
    /// Measure.
    #[serde(default)]
    pub measure: EffectMeasure,
    /// Smallest increase that fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_increase: Option<f64>,
    /// Largest decrease ratio that fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_decrease: Option<f64>,
    /// Smallest increase that is critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_increase: Option<f64>,
    /// Largest decrease ratio that is critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_decrease: Option<f64>,
}

impl EffectSize {
    /// Neutral value of the measure (no effect).
    pub fn neutral(&self) -> f64 {
        match self.measure {
            EffectMeasure::MeanRatio => 1.0,
            EffectMeasure::Cles => 0.5,
        }
    }

    /// (allowedIncrease, allowedDecrease, criticalIncrease, criticalDecrease) with defaults.
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        let n = self.neutral();
        (
            self.allowed_increase.unwrap_or(n),
            self.allowed_decrease.unwrap_or(n),
            self.critical_increase.unwrap_or(n),
            self.critical_decrease.unwrap_or(n),
        )
    }
}

/// Outlier handling.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outliers {
    /// keep or remove.
    #[serde(default)]
    pub strategy: OutlierStrategy,
    /// IQR factor.
    #[serde(default = "default_outlier_factor")]
    pub outlier_factor: f64,
}

impl Default for Outliers {
    fn default() -> Self {
        Outliers {
            strategy: OutlierStrategy::Keep,
            outlier_factor: default_outlier_factor(),
        }
    }
}

fn default_outlier_factor() -> f64 {
    3.0
}

/// Outlier strategy.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutlierStrategy {
    /// Keep every point.
    #[default]
    Keep,
    /// Drop IQR outliers.
    Remove,
}

/// Group weights and score thresholds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Classifier {
    /// Weight per group.
    pub group_weights: BTreeMap<String, f64>,
    /// Pass / marginal thresholds.
    pub score_thresholds: ScoreThresholds,
}

/// Score thresholds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
pub struct ScoreThresholds {
    /// At or below: fail.
    pub marginal: f64,
    /// At or above: pass.
    pub pass: f64,
}

/// How a live analysis runs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSettings {
    /// Query resolution.
    #[serde(default = "default_step")]
    pub step: Duration,
    /// Total time.
    #[serde(default = "default_lifetime")]
    pub lifetime: Duration,
    /// Judge every interval (none: once at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Window kind.
    #[serde(default)]
    pub lookback: Lookback,
    /// Warm-up.
    #[serde(default)]
    pub delay: Duration,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            step: default_step(),
            lifetime: default_lifetime(),
            interval: None,
            lookback: Lookback::Growing,
            delay: Duration::default(),
        }
    }
}

fn default_step() -> Duration {
    Duration::from_mins(1)
}

fn default_lifetime() -> Duration {
    Duration::from_mins(30)
}

/// Analysis window kind.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Lookback {
    /// From the start of the analysis.
    #[default]
    Growing,
    /// The last interval only.
    Sliding,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_namespace_defaults_to_true_and_falls_back_to_the_repository() {
        let unset = SyncPolicySpec::default();
        assert!(unset.resolve(&SyncPolicySpec::default()).create_namespace);
        let off: SyncPolicySpec =
            serde_yaml::from_str("createNamespace: false").expect("policy parses");
        assert!(!unset.resolve(&off).create_namespace);
        let on = SyncPolicySpec {
            create_namespace: Some(true),
            ..SyncPolicySpec::default()
        };
        assert!(on.resolve(&off).create_namespace);
    }
}
