//! What an execution carries with it: the instantiated stages and everything they need
//! (rendered objects per environment, clusters, parameters, canary config, windows), taken
//! from the repository when the execution is created.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::expr::{ExprContext, StageView};
use crate::config::instantiate::{instantiate, parameter_values};
use crate::config::{
    CanaryConfig, Cluster, ConfigRepo, DestinationsSpec, ExecutionWindow, IgnoreDifference,
    ManualJudgmentStage, Stage, StageAction, TimeoutOutcome,
};
use crate::destination::Destinations;
use crate::store::{NewExecution, NewStage, StageState};

fn default_true() -> bool {
    true
}

/// One environment as the execution sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvSnapshot {
    /// Namespace of the app there.
    pub namespace: String,
    /// Clusters, with waves.
    pub clusters: Vec<Cluster>,
    /// Prometheus base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// Rendered objects in apply order.
    pub objects: Vec<Value>,
    /// The environment's destinations when the execution was created (the default, the app's
    /// namespace alone, when absent).
    #[serde(default, skip_serializing_if = "DestinationsSpec::is_default")]
    pub destinations: DestinationsSpec,
}

impl EnvSnapshot {
    /// Where the execution may deploy in this environment.
    pub fn destinations(&self, environment: &str) -> Destinations {
        Destinations::from_spec(environment, &self.destinations, &self.namespace)
    }
}

/// Everything an execution needs, stored with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Who or what started it.
    pub user: String,
    /// The application (`name`, `labels`, `image`).
    pub app: Value,
    /// Pipeline parameters.
    pub parameters: Value,
    /// Environments the app deploys to.
    pub environments: BTreeMap<String, EnvSnapshot>,
    /// Execution windows of the template.
    #[serde(default)]
    pub windows: Vec<ExecutionWindow>,
    /// The app's canary config, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
    /// The app's ignore rules.
    #[serde(default)]
    pub ignore_differences: Vec<IgnoreDifference>,
    /// Take over fields of other managers.
    #[serde(default)]
    pub force_conflicts: bool,
    /// Prune objects no longer rendered.
    #[serde(default)]
    pub prune: bool,
    /// Create the app's namespace when it is missing (`syncPolicy.createNamespace`; true for
    /// executions recorded before it existed).
    #[serde(default = "default_true")]
    pub create_namespace: bool,
    /// Who may resolve manual judgments.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// The pull request whose merge this execution delivers (ChatOps commands on that pull
    /// request act on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// The author of that pull request (from its `closed` delivery), who may not approve
    /// this execution's judgments unless [`Snapshot::allow_self_approval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_author: Option<String>,
    /// The app's `allowSelfApproval`.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// For a rollback execution: restore the last revision applied successfully by an
    /// execution older than this one (the execution being rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_before: Option<String>,
}

impl Snapshot {
    /// The expression context of `stage`, with the current state of every stage.
    pub fn expr_context(
        &self,
        execution: &str,
        revision: &str,
        stage: &Stage,
        states: &[StageState],
    ) -> ExprContext {
        ExprContext {
            execution: json!({"id": execution, "revision": revision}),
            revision: revision.to_string(),
            parameters: self.parameters.clone(),
            app: self.app.clone(),
            trigger: json!({"user": self.user}),
            environment: stage
                .environment
                .as_ref()
                .and_then(|e| self.environments.get(e).map(|s| (e, s)))
                .map(|(name, s)| json!({"name": name, "namespace": s.namespace}))
                .unwrap_or(Value::Null),
            stages: states
                .iter()
                .map(|s| (s.name.clone(), StageView::new(s.status, s.outputs.clone())))
                .collect(),
            secrets: BTreeMap::new(),
        }
    }
}

/// Why an execution cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// No such application.
    #[error("unknown application \"{0}\"")]
    UnknownApp(String),
    /// The application has no pipeline.
    #[error("application \"{0}\" has no pipeline (spec.pipeline or defaults.pipeline)")]
    NoPipeline(String),
    /// The environment filter matches no environment of the app.
    #[error("application \"{app}\" is not deployed to environment \"{environment}\"")]
    UnknownEnvironment {
        /// Application.
        app: String,
        /// Environment asked for.
        environment: String,
    },
    /// The pipeline or manifests do not instantiate or render.
    #[error("{0}")]
    Invalid(String),
    /// No stage is left for the chosen environment.
    #[error("pipeline {pipeline} has no stage for environment \"{environment}\"")]
    NoStages {
        /// Pipeline.
        pipeline: String,
        /// Environment.
        environment: String,
    },
}

/// Builds the execution of `app`'s pipeline at `revision`, restricted to the stages of
/// `environment` when given (stages without an environment stay when everything they depend
/// on stays).
pub fn prepare(
    repo: &ConfigRepo,
    app: &str,
    environment: Option<&str>,
    revision: &str,
    user: &str,
) -> Result<NewExecution, PrepareError> {
    let doc = repo
        .apps
        .get(app)
        .ok_or_else(|| PrepareError::UnknownApp(app.to_string()))?;
    let application = &doc.doc;
    let pipeline = repo
        .pipeline_of(application)
        .ok_or_else(|| PrepareError::NoPipeline(app.to_string()))?
        .to_string();
    let template = repo.pipelines.get(&pipeline).ok_or_else(|| {
        PrepareError::Invalid(format!("unknown pipeline template \"{pipeline}\""))
    })?;
    let mut stages = instantiate(&template.doc, application).map_err(|errors| {
        PrepareError::Invalid(
            errors
                .iter()
                .map(|e| format!("{}: {}: {}", template.file, e.pointer, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let app_envs = repo.app_environments(application);
    if let Some(env) = environment {
        if !app_envs.iter().any(|e| e.name == env) {
            return Err(PrepareError::UnknownEnvironment {
                app: app.to_string(),
                environment: env.to_string(),
            });
        }
        stages = restrict(stages, env);
        if stages.is_empty() {
            return Err(PrepareError::NoStages {
                pipeline,
                environment: env.to_string(),
            });
        }
    }
    let mut environments = BTreeMap::new();
    let invalid = |d: Vec<crate::diagnostic::Diagnostic>| {
        PrepareError::Invalid(
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    let renderer = crate::render::AppRenderer::new(repo, doc).map_err(invalid)?;
    for env in &app_envs {
        if environment.is_some_and(|e| e != env.name) {
            continue;
        }
        let objects = renderer.render(env).map_err(invalid)?;
        environments.insert(
            env.name.clone(),
            EnvSnapshot {
                namespace: application.namespace_in(env),
                clusters: env.clusters.clone(),
                prometheus: env.prometheus.as_ref().map(|p| p.url.clone()),
                objects: objects.into_iter().map(|o| o.object).collect(),
                destinations: env.destinations.clone(),
            },
        );
    }
    let policy = repo.sync_policy(application);
    let snapshot = Snapshot {
        user: user.to_string(),
        app: json!({
            "name": app,
            "labels": application.metadata.labels,
            "image": application.spec.image.as_ref().map(crate::config::Image::reference),
        }),
        parameters: Value::Object(parameter_values(&template.doc, application)),
        environments,
        windows: template.doc.spec.execution_windows.clone(),
        canary: application
            .spec
            .canary
            .as_ref()
            .and_then(|c| repo.canaries.get(&c.config))
            .map(|c| c.doc.clone()),
        ignore_differences: application.spec.ignore_differences.clone(),
        force_conflicts: policy.force_conflicts,
        prune: policy.prune,
        create_namespace: policy.create_namespace,
        approvers: application.spec.approvers.clone(),
        pull_request: None,
        pull_request_author: None,
        allow_self_approval: application.spec.allow_self_approval,
        rollback_before: None,
    };
    Ok(new_execution(app, &snapshot, revision, pipeline, &stages))
}

/// Pipeline name of removal executions (see [`prepare_removal`]).
pub const REMOVAL_PIPELINE: &str = "removal";

/// The execution deleting what bowline created for `app`, which the last good commit `old`
/// had and `revision` no longer has: one `remove-<environment>` stage per environment it
/// was deployed to (`environments`, in promotion order), each after an
/// `approve-removal-<environment>` judgment when that environment is in `guarded` (the
/// removal deletes more of it than the environment lets one commit delete unapproved).
/// Settings come from `old`, the commit that still describes the app.
pub fn prepare_removal(
    old: &ConfigRepo,
    app: &str,
    environments: &[String],
    guarded: &BTreeMap<String, String>,
    revision: &str,
    user: &str,
) -> Result<NewExecution, PrepareError> {
    let application = &old
        .apps
        .get(app)
        .ok_or_else(|| PrepareError::UnknownApp(app.to_string()))?
        .doc;
    let mut envs = BTreeMap::new();
    let mut stages = Vec::new();
    for env in old
        .app_environments(application)
        .into_iter()
        .filter(|e| environments.contains(&e.name))
    {
        envs.insert(
            env.name.clone(),
            EnvSnapshot {
                namespace: application.namespace_in(env),
                clusters: env.clusters.clone(),
                prometheus: None,
                objects: Vec::new(),
                destinations: env.destinations.clone(),
            },
        );
        let remove = format!("remove-{}", env.name);
        let mut depends_on = Vec::new();
        if let Some(why) = guarded.get(&env.name) {
            let judgment = format!("approve-removal-{}", env.name);
            stages.push(Stage {
                name: judgment.clone(),
                environment: Some(env.name.clone()),
                depends_on: Vec::new(),
                when: None,
                timeout: None,
                retries: 0,
                action: StageAction::ManualJudgment(ManualJudgmentStage {
                    instructions: Some(format!(
                        "{app} was removed from the repository: {why}. Comment \"/bowline approve\" to delete them, or \"/bowline reject\" to leave them running."
                    )),
                    approvers: Vec::new(),
                    inputs: Vec::new(),
                    on_timeout: TimeoutOutcome::Reject,
                }),
            });
            depends_on.push(judgment);
        }
        stages.push(Stage {
            name: remove,
            environment: Some(env.name.clone()),
            depends_on,
            when: None,
            timeout: None,
            retries: 2,
            action: StageAction::Remove {},
        });
    }
    if stages.is_empty() {
        return Err(PrepareError::Invalid(format!(
            "application \"{app}\" was deployed to none of its environments: nothing to remove"
        )));
    }
    let snapshot = Snapshot {
        user: user.to_string(),
        app: json!({
            "name": app,
            "labels": application.metadata.labels,
            "image": application.spec.image.as_ref().map(crate::config::Image::reference),
        }),
        parameters: json!({}),
        environments: envs,
        windows: Vec::new(),
        canary: None,
        ignore_differences: application.spec.ignore_differences.clone(),
        force_conflicts: false,
        prune: true,
        // Nothing is applied, so nothing needs a namespace; the one bowline created for the
        // app is pruned with the rest.
        create_namespace: false,
        approvers: application.spec.approvers.clone(),
        pull_request: None,
        pull_request_author: None,
        allow_self_approval: application.spec.allow_self_approval,
        rollback_before: None,
    };
    Ok(new_execution(
        app,
        &snapshot,
        revision,
        REMOVAL_PIPELINE.to_string(),
        &stages,
    ))
}

/// The execution of `stages` with `snapshot` (stored as its trigger) at `revision`.
fn new_execution(
    app: &str,
    snapshot: &Snapshot,
    revision: &str,
    pipeline: String,
    stages: &[Stage],
) -> NewExecution {
    NewExecution {
        app: app.to_string(),
        environments: snapshot.environments.keys().cloned().collect(),
        revision: revision.to_string(),
        pipeline,
        trigger: serde_json::to_value(snapshot).unwrap_or(Value::Null),
        stages: stages
            .iter()
            .map(|s| NewStage {
                name: s.name.clone(),
                stage_type: s.action.stage_type().as_str().to_string(),
                environment: s.environment.clone(),
                inputs: serde_json::to_value(s).unwrap_or(Value::Null),
            })
            .collect(),
    }
}

/// The stages of `environment`, plus environment-less stages whose dependencies all stay;
/// dependencies on dropped stages are removed.
fn restrict(stages: Vec<Stage>, environment: &str) -> Vec<Stage> {
    let mut kept: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for stage in stages {
        let keep = match &stage.environment {
            Some(e) => e == environment,
            None => {
                !stage.depends_on.is_empty() && stage.depends_on.iter().all(|d| kept.contains(d))
            }
        };
        if keep {
            kept.insert(stage.name.clone());
            out.push(stage);
        }
    }
    for stage in &mut out {
        stage.depends_on.retain(|d| kept.contains(d));
    }
    out
}
