//! Drift: a periodic comparison of each app's live objects with what its last successful
//! execution applied (server-side dry-run, the same normalization as `plan`), reported in
//! metrics, logs and the API, and corrected by re-applying when the app's sync policy has
//! `selfHeal`. Fields that another field manager took over (a `kubectl edit`, say) count as
//! drift, and self-heal takes them back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Daemon, lock};
use crate::cluster::Cluster;
use crate::destination::Destinations;
use crate::diff::Action;
use crate::render::RenderedObject;
use crate::store::{ExecutionFilter, ExecutionStatus};
use crate::sync::{self, AppTarget, SyncOptions};

/// The drift of one app in one environment and cluster at the last check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetDrift {
    /// Environment.
    pub environment: String,
    /// Cluster.
    pub cluster: String,
    /// The deployed revision compared with.
    pub revision: String,
    /// Objects whose live state differs (or that are missing).
    pub out_of_sync: usize,
    /// `Kind namespace/name` of those objects (at most 20).
    pub objects: Vec<String>,
    /// Those objects with what differs: the action a sync would take and the fields (JSON
    /// pointers) that differ from the deployed revision (at most 20 objects).
    pub changes: Vec<DriftedObject>,
    /// Whether the drift was corrected by re-applying.
    pub healed: bool,
    /// Why the target could not be compared, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When.
    pub checked_at: DateTime<Utc>,
}

/// One object that drifted from the deployed revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    /// `apiVersion kind namespace/name`.
    pub object: String,
    /// What a sync would do: `create` (it is gone), `update` or `delete`.
    pub action: String,
    /// JSON pointers of the fields that differ (for updates).
    pub fields: Vec<String>,
}

impl Daemon {
    /// Compares every deployed app of the last good commit with its clusters once. Apps with
    /// an execution queued or running are left alone: their pipeline is changing them.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn check_drift(&self) -> BTreeMap<String, Vec<TargetDrift>> {
        let Some(sha) = lock(&self.state).last_good.clone() else {
            return BTreeMap::new();
        };
        let repo = match self.snapshot(&sha) {
            Ok((snapshot, _)) => self.checker.documents(&snapshot),
            Err(e) => {
                tracing::warn!(error = %e, "drift check could not read the last good commit");
                return BTreeMap::new();
            }
        };
        let busy: Vec<String> = self
            .store
            .executions(&ExecutionFilter {
                statuses: vec![ExecutionStatus::Queued, ExecutionStatus::Running],
                ..ExecutionFilter::default()
            })
            .map(|list| list.into_iter().map(|e| e.app).collect())
            .unwrap_or_default();
        let declarations = crate::check::current(&self.services.declarations);
        // One attempt per cluster and pass, through the process's shared connections.
        let mut connections: HashMap<(String, String), Result<Arc<Cluster>, String>> =
            HashMap::new();
        let mut report: BTreeMap<String, Vec<TargetDrift>> = BTreeMap::new();
        self.metrics.drift_objects.reset();
        for (name, app) in &repo.apps {
            if busy.contains(name) {
                continue;
            }
            let app = &app.doc;
            let policy = repo.sync_policy(app);
            let diff = sync::diff_options_for(app, &self.config.masker);
            for environment in repo.environments() {
                if !app.spec.environments.contains_key(&environment.name) {
                    continue;
                }
                let destinations = Destinations::of(environment);
                for cluster in &environment.clusters {
                    let deployed =
                        match self
                            .store
                            .last_good(name, &environment.name, &cluster.name, None)
                        {
                            Ok(Some(d)) => d,
                            Ok(None) => continue, // never deployed there
                            Err(e) => {
                                tracing::warn!(error = %e, "drift check could not read the store");
                                continue;
                            }
                        };
                    let key = (cluster.name.clone(), cluster.context.clone());
                    if !connections.contains_key(&key) {
                        let connected = self
                            .services
                            .clusters
                            .get(&cluster.name, &cluster.context)
                            .await
                            .map_err(|e| e.to_string());
                        connections.insert(key.clone(), connected);
                    }
                    let objects: Vec<RenderedObject> = deployed
                        .objects
                        .iter()
                        .cloned()
                        .map(RenderedObject::from_value)
                        .collect();
                    let namespace = app.namespace_in(environment);
                    let target = AppTarget {
                        app: name,
                        environment: &environment.name,
                        cluster: &cluster.name,
                        namespace: &namespace,
                        destinations: &destinations,
                        objects: &objects,
                        prune: policy.prune,
                        // A field another manager took (`kubectl edit`) is drift too: compare
                        // and heal as the owner of the deployed revision.
                        force_conflicts: true,
                        context: &cluster.context,
                        declarations: declarations
                            .as_deref()
                            .map(|d| d as &dyn crate::cluster::prune::Declarations),
                    };
                    let mut drift = TargetDrift {
                        environment: environment.name.clone(),
                        cluster: cluster.name.clone(),
                        revision: deployed.revision.clone(),
                        out_of_sync: 0,
                        objects: Vec::new(),
                        changes: Vec::new(),
                        healed: false,
                        error: None,
                        checked_at: Utc::now(),
                    };
                    let connection = match connections.get(&key) {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => {
                            drift.error = Some(e.clone());
                            report.entry(name.clone()).or_default().push(drift);
                            continue;
                        }
                        None => continue,
                    };
                    match sync::plan_with(connection, &target, &diff, policy.create_namespace).await
                    {
                        Ok(plan) => {
                            let changed: Vec<DriftedObject> = plan
                                .objects
                                .iter()
                                .filter(|o| o.action != Action::Unchanged)
                                .map(|o| DriftedObject {
                                    object: o.key.to_string(),
                                    action: o.action.as_str().to_string(),
                                    fields: o.changed.clone(),
                                })
                                .collect();
                            drift.out_of_sync = changed.len();
                            drift.changes = changed.into_iter().take(20).collect();
                            drift.objects =
                                drift.changes.iter().map(|c| c.object.clone()).collect();
                        }
                        Err(e) => drift.error = Some(e.to_string()),
                    }
                    if drift.out_of_sync > 0 {
                        for change in &drift.changes {
                            tracing::warn!(app = %name, environment = %environment.name, cluster = %cluster.name,
                                object = %change.object, action = %change.action, fields = ?change.fields,
                                "drift from the deployed revision");
                        }
                        if policy.self_heal {
                            let options = SyncOptions {
                                wait: false,
                                create_namespace: policy.create_namespace,
                                ..SyncOptions::default()
                            };
                            match sync::sync(connection, &target, &diff, &options, &|_| {}).await {
                                Ok(_) => {
                                    drift.healed = true;
                                    tracing::info!(app = %name, environment = %environment.name, cluster = %cluster.name, "drift corrected (selfHeal)");
                                }
                                Err(e) => {
                                    drift.error = Some(format!("self-heal failed: {e}"));
                                }
                            }
                        }
                    }
                    let left = if drift.healed { 0 } else { drift.out_of_sync };
                    self.metrics
                        .drift_objects
                        .with_label_values(&[
                            name.as_str(),
                            environment.name.as_str(),
                            cluster.name.as_str(),
                        ])
                        .set(i64::try_from(left).unwrap_or(i64::MAX));
                    report.entry(name.clone()).or_default().push(drift);
                }
            }
        }
        self.metrics
            .drift_checked
            .set(Utc::now().timestamp() as f64);
        *lock(&self.drift) = report.clone();
        report
    }
}
