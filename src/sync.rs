//! Bringing one application in one environment in line with the repository, cluster by
//! cluster: the live plan (each rendered object server-side dry-run applied and compared with
//! the live one, plus the objects pruning would delete) and the sync itself (apply, prune, wait
//! for health).
//!
//! This is where [`crate::render`], [`crate::diff`] and [`crate::cluster`] meet; the CLI and
//! the pipeline's deploy stages call it.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;

use crate::cluster::prune::Declarations;
use crate::cluster::{Cluster, ClusterError, ClusterPool, Health, health};
use crate::config::{Application, ConfigRepo, Environment, SyncPolicy};
use crate::destination::{Destinations, Refused};
use crate::diff::Masker;
use crate::diff::{self, Action, Counts, DiffOptions, ObjectDiff, ObjectKey};
use crate::render::RenderedObject;

/// Requests in flight per cluster while planning.
const CONCURRENCY: usize = 8;

/// What one application in one environment is compared with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LiveState {
    /// The live cluster (server-side dry-run against live objects).
    Cluster,
    /// No cluster could be used: everything is compared with an empty cluster.
    Empty {
        /// Why (no kubeconfig, cluster unreachable, …).
        reason: String,
    },
}

/// The live plan of one application, environment and cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlan {
    /// Application.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Cluster name.
    pub cluster: String,
    /// What the desired state was compared with.
    pub live: LiveState,
    /// Counts per action.
    pub counts: Counts,
    /// One entry per object: desired objects in apply order, then deletions.
    pub objects: Vec<ObjectDiff>,
}

/// What a plan or sync needs to know about the application.
#[derive(Debug, Clone)]
pub struct AppTarget<'a> {
    /// Application name.
    pub app: &'a str,
    /// Environment name.
    pub environment: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// Namespaces the app deploys to (for finding objects to prune).
    pub namespace: &'a str,
    /// Where the environment lets the app deploy: checked before any request.
    pub destinations: &'a Destinations,
    /// Rendered objects in apply order.
    pub objects: &'a [RenderedObject],
    /// Include the objects pruning would delete.
    pub prune: bool,
    /// Take over fields owned by other field managers.
    pub force_conflicts: bool,
    /// kubeconfig context of the cluster: what identifies it for ownership.
    pub context: &'a str,
    /// Which apps of the repository declare which objects, when known: an object another app
    /// declares is never pruned, and one whose owning app no longer declares it is taken over.
    pub declarations: Option<&'a dyn Declarations>,
}

/// How objects are compared for `target`: the given options plus the implicit rules of its
/// own objects (replicas of autoscaled workloads).
pub fn diff_options(base: &DiffOptions, objects: &[RenderedObject]) -> DiffOptions {
    let mut options = base.clone();
    options
        .ignore
        .extend(diff::implicit_ignores(objects.iter().map(|o| &o.object)));
    options
}

/// The rendered object as sent to the API server: without the fields bowline ignores once
/// the object exists (so it never claims, say, an autoscaler's replicas).
fn apply_body(object: &Value, live: Option<&Value>, options: &DiffOptions) -> Value {
    let mut body = object.clone();
    if live.is_some() {
        for path in options.ignored_paths(object, live) {
            diff::ignore::remove_path(&mut body, &path);
        }
    }
    body
}

/// Plans `target` against an empty cluster (no API server): every object is a creation.
pub fn plan_offline(target: &AppTarget<'_>, options: &DiffOptions, reason: &str) -> TargetPlan {
    let options = diff_options(options, target.objects);
    let objects: Vec<ObjectDiff> = target
        .objects
        .iter()
        .map(|o| diff::compare(None, Some(&o.object), &options))
        .collect();
    TargetPlan {
        app: target.app.to_string(),
        environment: target.environment.to_string(),
        cluster: target.cluster.to_string(),
        live: LiveState::Empty {
            reason: reason.to_string(),
        },
        counts: Counts::of(&objects),
        objects,
    }
}

/// One object as planned: the body to apply and its diff.
struct Planned {
    body: Value,
    diff: ObjectDiff,
    /// Why the cluster cannot take the object at all (it does not serve its kind): a sync
    /// fails on it before applying anything.
    unserved: Option<String>,
}

/// Plans `target` against the live cluster, creating missing namespaces (the default
/// `syncPolicy.createNamespace`).
pub async fn plan(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    options: &DiffOptions,
) -> Result<TargetPlan, SyncError> {
    plan_with(cluster, target, options, true).await
}

/// Plans `target` against the live cluster. A missing namespace is planned as a creation when
/// `create_namespace`, and otherwise reported as what a sync would fail on; the objects bound
/// for it are planned as creations without a dry-run (which the server would refuse).
#[tracing::instrument(level = "info", skip_all, fields(app = target.app, environment = target.environment, cluster = target.cluster))]
pub async fn plan_with(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    options: &DiffOptions,
    create_namespace: bool,
) -> Result<TargetPlan, SyncError> {
    let planned = plan_objects(cluster, target, options, create_namespace).await?;
    let objects: Vec<ObjectDiff> = planned
        .uncreated
        .iter()
        .map(|ns| uncreated_namespace(ns, cluster.name()))
        .chain(planned.objects.into_iter().map(|p| p.diff))
        .chain(planned.deletions.into_iter().map(|(_, d)| d))
        .collect();
    Ok(TargetPlan {
        app: target.app.to_string(),
        environment: target.environment.to_string(),
        cluster: target.cluster.to_string(),
        live: LiveState::Cluster,
        counts: Counts::of(&objects),
        objects,
    })
}

/// Reads the live object and, when the app manages it (or it does not exist), server-side
/// dry-runs the desired one and compares them. An existing object the app does not manage is
/// reported without content and never dry-run. An object bound for a namespace that does not
/// exist yet is planned as a creation of the rendered object, without any request.
async fn plan_one(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    rendered: &RenderedObject,
    options: &DiffOptions,
    into_missing_namespace: bool,
) -> Result<Planned, SyncError> {
    let key = ObjectKey::of(&rendered.object);
    if into_missing_namespace {
        // Nothing can exist there yet, and the server refuses a dry-run into it.
        let diff = diff::compare(None, Some(&rendered.object), options);
        return Ok(Planned {
            body: rendered.object.clone(),
            diff,
            unserved: None,
        });
    }
    let live = match cluster.get(&key).await {
        Ok(live) => live,
        Err(e @ crate::cluster::ClusterError::UnknownKind { .. }) => {
            return Ok(unserved(target, rendered, &e, options));
        }
        Err(e) => return Err(e.into()),
    };
    let mut taken_from = None;
    if let Some(existing) = &live
        && !crate::cluster::prune::is_managed_by(existing, target.app)
    {
        let owner = crate::cluster::prune::owner(existing);
        // Moved between apps in the repository: the old owner no longer declares it.
        let handed_over = owner
            .zip(target.declarations)
            .is_some_and(|(owner, declared)| {
                declared.declares(owner, target.context, &key) == Some(false)
            });
        if !handed_over {
            return Ok(Planned {
                body: rendered.object.clone(),
                diff: ObjectDiff::refused(key, target.app, owner),
                unserved: None,
            });
        }
        taken_from = owner.map(str::to_string);
    }
    let body = apply_body(&rendered.object, live.as_ref(), options);
    let (dry_run, conflict) = match cluster.apply(&body, true, target.force_conflicts).await {
        Ok(dry_run) => (dry_run, None),
        // Fields another manager owns (someone ran `kubectl set image`, say): the plan shows
        // the change a forced apply would make, marked with the server's words for the
        // conflict, instead of failing the whole target.
        Err(e) if e.is_conflict() => {
            let forced = cluster.apply(&body, true, true).await?;
            (forced, Some(e.server_message()))
        }
        Err(e) => return Err(e.into()),
    };
    let mut diff = diff::compare(live.as_ref(), Some(&dry_run), options);
    if let Some(conflict) = conflict {
        diff.unified = format!(
            "! conflict: {conflict}\n! a sync fails on it unless syncPolicy.forceConflicts is true, which takes these fields over from their manager\n{}",
            diff.unified
        );
        diff.conflict = Some(conflict);
    }
    if let Some(owner) = taken_from {
        tracing::info!(object = %diff.key, from = %owner, "taken over from an app that no longer declares it");
        diff.unified = format!(
            "! taken over from bowline app {owner}, which no longer declares it\n{}",
            diff.unified
        );
        diff.taken_over_from = Some(owner);
    }
    Ok(Planned {
        body,
        diff,
        unserved: None,
    })
}

/// An object whose kind the cluster does not serve. When the app renders the
/// CustomResourceDefinition that defines it (applied first, by kind order), it is planned as a
/// creation without a dry-run; otherwise it is refused, saying so, and a sync fails on it
/// before applying anything. Either way the rest of the target is planned as usual.
fn unserved(
    target: &AppTarget<'_>,
    rendered: &RenderedObject,
    error: &crate::cluster::ClusterError,
    options: &DiffOptions,
) -> Planned {
    let key = ObjectKey::of(&rendered.object);
    let text = |o: &RenderedObject, p: &str| {
        o.object
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let crd = target.objects.iter().find(|o| {
        o.kind == "CustomResourceDefinition"
            && text(o, "/spec/group").as_deref() == Some(key.group())
            && text(o, "/spec/names/kind").as_deref() == Some(key.kind.as_str())
    });
    match crd {
        Some(crd) => {
            let mut diff = diff::compare(None, Some(&rendered.object), options);
            diff.unified = format!(
                "! not dry-run: the cluster serves {} {} once CustomResourceDefinition {} (applied first) is in place\n{}",
                key.api_version, key.kind, crd.name, diff.unified
            );
            Planned {
                body: rendered.object.clone(),
                diff,
                unserved: None,
            }
        }
        None => Planned {
            body: rendered.object.clone(),
            diff: ObjectDiff {
                unified: format!("! {key}: {error}: a sync fails on it\n"),
                key,
                action: Action::Refuse,
                changed: Vec::new(),
                conflict: None,
                taken_over_from: None,
            },
            unserved: Some(error.to_string()),
        },
    }
}

/// The plan entry of a missing namespace that `syncPolicy.createNamespace: false` keeps bowline
/// from creating: a sync fails on it.
fn uncreated_namespace(namespace: &str, cluster: &str) -> ObjectDiff {
    let key = namespace_key(namespace);
    let unified = format!(
        "! {key}: does not exist in cluster {cluster} and syncPolicy.createNamespace is false: a sync would fail\n"
    );
    ObjectDiff {
        key,
        action: Action::Refuse,
        changed: Vec::new(),
        unified,
        conflict: None,
        taken_over_from: None,
    }
}

fn namespace_key(namespace: &str) -> ObjectKey {
    ObjectKey {
        api_version: "v1".to_string(),
        kind: "Namespace".to_string(),
        namespace: None,
        name: namespace.to_string(),
    }
}

/// Plans the namespace bowline creates for the app: when missing, a creation (dry-run, as a
/// cluster-scoped object can be); when it exists and bowline created it for this app, compared
/// like any object so that it stays desired (and is never pruned).
async fn plan_namespace(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    namespace: &str,
    live: Option<Value>,
    options: &DiffOptions,
) -> Result<Planned, SyncError> {
    let body = crate::cluster::prune::namespace_object(namespace, target.app, target.environment);
    let dry_run = cluster.apply(&body, true, target.force_conflicts).await?;
    let diff = diff::compare(live.as_ref(), Some(&dry_run), options);
    Ok(Planned {
        body,
        diff,
        unserved: None,
    })
}

/// Makes sure `namespace` exists in `cluster` before objects are applied outside [`sync`] (a
/// deploy stage applying its own objects): when missing, creates it by server-side apply with
/// bowline's labels for `app` in `environment` if `create` (`syncPolicy.createNamespace`), and
/// otherwise fails naming it. Returns whether it was created.
#[tracing::instrument(level = "info", skip(cluster), fields(cluster = cluster.name()))]
pub async fn ensure_namespace(
    cluster: &Cluster,
    namespace: &str,
    app: &str,
    environment: &str,
    create: bool,
) -> Result<bool, SyncError> {
    if cluster.get(&namespace_key(namespace)).await?.is_some() {
        return Ok(false);
    }
    if !create {
        return Err(SyncError::NamespaceMissing {
            namespace: namespace.to_string(),
            cluster: cluster.name().to_string(),
        });
    }
    let body = crate::cluster::prune::namespace_object(namespace, app, environment);
    cluster.apply(&body, false, false).await?;
    Ok(true)
}

/// Refuses the first object outside the destinations, by its rendered scope: before any
/// request reaches the cluster.
pub fn check_destinations(target: &AppTarget<'_>) -> Result<(), Refused> {
    for rendered in target.objects {
        let key = ObjectKey::of(&rendered.object);
        target.destinations.check(&key, key.namespace.is_none())?;
    }
    Ok(())
}

/// Everything a plan or sync of one target found.
struct PlannedTarget {
    /// Namespaces to create (when bowline creates them) and objects, in apply order.
    objects: Vec<Planned>,
    /// Objects pruning would delete.
    deletions: Vec<(ObjectKey, ObjectDiff)>,
    /// Missing namespaces that `syncPolicy.createNamespace: false` keeps bowline from creating.
    uncreated: Vec<String>,
}

/// The namespaces `target`'s objects go to (by the cluster's scope of their kinds) plus the
/// environment's namespace, inside the destinations, that do not exist yet.
async fn missing_namespaces(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    object_namespaces: BTreeSet<String>,
) -> Result<BTreeSet<String>, SyncError> {
    let mut missing = BTreeSet::new();
    let wanted = object_namespaces
        .into_iter()
        .chain(std::iter::once(target.namespace.to_string()))
        // Only where the app may deploy: a namespace outside the destinations is neither
        // looked up nor created (objects bound for one are refused before this).
        .filter(|ns| !ns.is_empty() && target.destinations.allows_namespace(ns))
        .collect::<BTreeSet<_>>();
    for ns in wanted {
        if cluster.get(&namespace_key(&ns)).await?.is_none() {
            missing.insert(ns);
        }
    }
    Ok(missing)
}

async fn plan_objects(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    options: &DiffOptions,
    create_namespace: bool,
) -> Result<PlannedTarget, SyncError> {
    check_destinations(target)?;
    // Again with the scope the cluster's discovery reports (a custom kind may be
    // cluster-scoped), for every object before any of them is read or dry-run.
    let mut object_namespaces = BTreeSet::new();
    for rendered in target.objects {
        let key = ObjectKey::of(&rendered.object);
        let namespaced = match cluster.is_namespaced(&key.api_version, &key.kind).await {
            Ok(namespaced) => namespaced,
            // Not served (yet): judged by its rendered scope here; its plan entry says why.
            Err(crate::cluster::ClusterError::UnknownKind { .. }) => key.namespace.is_some(),
            Err(e) => return Err(e.into()),
        };
        target.destinations.check(&key, !namespaced)?;
        if namespaced && let Some(ns) = &key.namespace {
            object_namespaces.insert(ns.clone());
        }
    }
    let options = diff_options(options, target.objects);
    let missing = missing_namespaces(cluster, target, object_namespaces.clone()).await?;
    // Namespaces the app renders itself are applied before the objects in them, like any
    // rendered object.
    let rendered_namespaces: HashSet<&str> = target
        .objects
        .iter()
        .filter(|o| crate::cluster::prune::is_namespace(&o.object))
        .map(|o| o.name.as_str())
        .collect();
    let mut uncreated = Vec::new();
    let mut planned = Vec::new();
    // The environment's namespace and every other missing one the app's objects need.
    let to_create: BTreeSet<String> = missing
        .iter()
        .filter(|ns| !rendered_namespaces.contains(ns.as_str()))
        .cloned()
        .collect();
    // An app with nothing to deploy (removed from the repository) needs no namespace.
    let create_namespace = create_namespace && !target.objects.is_empty();
    if create_namespace
        && target.destinations.allows_namespace(target.namespace)
        && !rendered_namespaces.contains(target.namespace)
        && !to_create.contains(target.namespace)
    {
        // Present: kept as desired only when bowline created it for this app.
        let live = cluster.get(&namespace_key(target.namespace)).await?;
        if let Some(live) = live.filter(|ns| crate::cluster::prune::is_managed_by(ns, target.app)) {
            planned.push(
                plan_namespace(cluster, target, target.namespace, Some(live), &options).await?,
            );
        }
    }
    if create_namespace {
        for ns in to_create {
            target.destinations.check(&namespace_key(&ns), true)?;
            planned.push(plan_namespace(cluster, target, &ns, None, &options).await?);
        }
    } else {
        // Only what the objects need: the environment's namespace may go unused.
        uncreated.extend(
            to_create
                .into_iter()
                .filter(|ns| object_namespaces.contains(ns)),
        );
    }
    // Collected first: a stream over a closure would not be `Send` for every lifetime, which
    // callers spawning this on a runtime need.
    let lookups: Vec<_> = target
        .objects
        .iter()
        .map(|rendered| {
            let into_missing = rendered
                .namespace
                .as_ref()
                .is_some_and(|ns| missing.contains(ns));
            plan_one(cluster, target, rendered, &options, into_missing)
        })
        .collect();
    planned.extend(
        stream::iter(lookups)
            .buffered(CONCURRENCY)
            .try_collect::<Vec<Planned>>()
            .await?,
    );
    let mut deletions = Vec::new();
    if target.prune {
        let desired: HashSet<ObjectKey> = planned.iter().map(|p| p.diff.key.clone()).collect();
        // Namespaces holding desired objects, and the environment's own while the app has
        // anything to deploy, are never pruned. An app that renders nothing (removed from the
        // repository) leaves the namespace bowline created for it when no other app uses it.
        let mut kept_namespaces: HashSet<String> = target
            .objects
            .iter()
            .filter_map(|o| o.namespace.clone())
            .chain((!target.objects.is_empty()).then(|| target.namespace.to_string()))
            .collect();
        let namespaces: Vec<String> = target
            .objects
            .iter()
            .filter_map(|o| o.namespace.clone())
            .chain(std::iter::once(target.namespace.to_string()))
            .filter(|ns| target.destinations.allows_namespace(ns))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut live = cluster.list_managed(target.app, &namespaces).await?;
        // Namespaces bowline created for the app that it no longer deploys to (the app moved):
        // what it left there is pruned too, within the destinations.
        let left: Vec<String> = live
            .iter()
            .filter(|o| {
                crate::cluster::prune::is_namespace(o)
                    && crate::cluster::prune::is_ours(o, target.app, target.environment)
            })
            .map(|o| ObjectKey::of(o).name)
            .filter(|ns| !namespaces.contains(ns) && target.destinations.allows_namespace(ns))
            .collect();
        if !left.is_empty() {
            live.extend(cluster.list_managed_in(target.app, &left).await?);
        }
        for object in crate::cluster::prune::select(&live, &desired, target.app, target.environment)
        {
            // Only inside the destinations: what the app may not create, it may not delete.
            let key = ObjectKey::of(object);
            if target
                .destinations
                .check(&key, key.namespace.is_none())
                .is_err()
            {
                tracing::warn!(object = %key, "not pruned: outside the destinations");
                continue;
            }
            // Moved to another app in the repository: that app takes it over.
            if let Some(declared) = target.declarations {
                let others = declared.others_declaring(target.app, target.context, &key);
                if !others.is_empty() {
                    tracing::info!(object = %key, apps = ?others, "not pruned: another app declares it now");
                    // Nor is the namespace holding it (namespaces come last).
                    kept_namespaces.extend(key.namespace.clone());
                    continue;
                }
            }
            if crate::cluster::prune::is_namespace(object)
                && (kept_namespaces.contains(&key.name)
                    || cluster
                        .namespace_used_by_others(&key.name, target.app)
                        .await?)
            {
                tracing::info!(object = %key, "not pruned: a namespace still in use");
                continue;
            }
            deletions.push((
                ObjectKey::of(object),
                diff::compare(Some(object), None, &options),
            ));
        }
    }
    Ok(PlannedTarget {
        objects: planned,
        deletions,
        uncreated,
    })
}

/// How a sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Only dry-run: report what would change, change nothing.
    pub dry_run: bool,
    /// Wait for workloads to become healthy.
    pub wait: bool,
    /// Longest wait for health.
    pub timeout: Duration,
    /// Time between health checks.
    pub poll: Duration,
    /// Create missing namespaces before applying objects (`syncPolicy.createNamespace`);
    /// when false, a sync into a missing namespace fails naming it.
    pub create_namespace: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            dry_run: false,
            wait: true,
            timeout: Duration::from_secs(300),
            poll: Duration::from_secs(2),
            create_namespace: true,
        }
    }
}

/// Something that happened during a sync, for progress output.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEvent {
    /// An object was applied (or found unchanged, or would be applied in a dry run).
    Applied(ObjectDiff),
    /// An object was deleted by pruning.
    Pruned(ObjectKey),
    /// Waiting for these workloads to become healthy.
    Waiting(Vec<ObjectKey>),
    /// A workload's health changed.
    Health(ObjectKey, Health),
}

/// The outcome of a successful sync.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// What changed, per object (the plan that was carried out).
    pub plan: TargetPlan,
    /// Whether health was awaited and reached.
    pub healthy: bool,
    /// Time taken.
    #[serde(with = "humantime_serde_secs")]
    pub elapsed: Duration,
}

mod humantime_serde_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An object lies outside its environment's destinations (nothing was sent for it).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The cluster does not serve the kind of some objects (and the app renders no
    /// CustomResourceDefinition for them): nothing was applied.
    #[error("{}: nothing was applied", .0.join("; "))]
    Unserved(Vec<String>),
    /// Objects exist that the app does not manage: a sync never takes them over.
    #[error("{} already {} and {} not managed by {app}: refusing to take {} over", list(objects), if objects.len() == 1 { "exists" } else { "exist" }, if objects.len() == 1 { "is" } else { "are" }, if objects.len() == 1 { "it" } else { "them" })]
    NotManaged {
        /// The application.
        app: String,
        /// The objects.
        objects: Vec<ObjectKey>,
    },
    /// The app's objects need a namespace that does not exist, and the sync policy does not
    /// let bowline create it.
    #[error(
        "namespace {namespace:?} does not exist in cluster {cluster} and syncPolicy.createNamespace is false: create it, or set createNamespace to true"
    )]
    NamespaceMissing {
        /// The namespace.
        namespace: String,
        /// The cluster.
        cluster: String,
    },
    /// A workload will not become healthy.
    #[error("rollout of {object} failed: {reason}")]
    RolloutFailed {
        /// The workload.
        object: ObjectKey,
        /// Why, e.g. `ProgressDeadlineExceeded: …; pod …: ImagePullBackOff (…)`.
        reason: String,
    },
    /// Health was not reached in time.
    #[error("timed out after {}s waiting for {object}: {last}", waited.as_secs())]
    Timeout {
        /// The first workload still not healthy.
        object: ObjectKey,
        /// How long was waited.
        waited: Duration,
        /// Its last health.
        last: Health,
    },
}

impl SyncError {
    /// True when another sync may succeed: the cluster could not be reached or failed the
    /// request ([`ClusterError::is_transient`]), or a workload was still progressing when the
    /// wait ended. Refused destinations, objects not managed by the app, a missing namespace
    /// and a failed rollout need a change first.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Cluster(e) => e.is_transient(),
            SyncError::Timeout { .. } => true,
            SyncError::Refused(_)
            | SyncError::Unserved(_)
            | SyncError::NotManaged { .. }
            | SyncError::NamespaceMissing { .. }
            | SyncError::RolloutFailed { .. } => false,
        }
    }
}

/// Syncs `target` to `cluster`: creates missing namespaces (unless
/// `options.create_namespace` is false, then fails naming them), applies what changed
/// (server-side apply), prunes what is no longer desired when `target.prune` is set, then waits
/// for the workloads to be healthy.
#[tracing::instrument(level = "info", skip_all, fields(app = target.app, environment = target.environment, cluster = target.cluster, dry_run = options.dry_run))]
pub async fn sync(
    cluster: &Cluster,
    target: &AppTarget<'_>,
    diff_base: &DiffOptions,
    options: &SyncOptions,
    progress: &(dyn Fn(SyncEvent) + Sync),
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let PlannedTarget {
        objects: planned,
        deletions,
        uncreated,
    } = plan_objects(cluster, target, diff_base, options.create_namespace).await?;
    if let Some(namespace) = uncreated.into_iter().next() {
        return Err(SyncError::NamespaceMissing {
            namespace,
            cluster: cluster.name().to_string(),
        });
    }
    let unserved: Vec<String> = planned.iter().filter_map(|p| p.unserved.clone()).collect();
    if !unserved.is_empty() {
        return Err(SyncError::Unserved(unserved));
    }
    let unmanaged: Vec<ObjectKey> = planned
        .iter()
        .filter(|p| p.diff.action == Action::Refuse)
        .map(|p| p.diff.key.clone())
        .collect();
    if !unmanaged.is_empty() {
        return Err(SyncError::NotManaged {
            app: target.app.to_string(),
            objects: unmanaged,
        });
    }
    for p in &planned {
        if !options.dry_run && p.diff.action != Action::Unchanged {
            cluster
                .apply(&p.body, false, target.force_conflicts)
                .await?;
        }
        progress(SyncEvent::Applied(p.diff.clone()));
    }
    for (key, _) in &deletions {
        if !options.dry_run {
            cluster.delete(key, false).await?;
        }
        progress(SyncEvent::Pruned(key.clone()));
    }
    let workloads: Vec<ObjectKey> = planned
        .iter()
        .filter(|p| health::has_rollout(&p.body))
        .map(|p| p.diff.key.clone())
        .collect();
    let healthy = if options.dry_run || !options.wait || workloads.is_empty() {
        options.dry_run || workloads.is_empty()
    } else {
        progress(SyncEvent::Waiting(workloads.clone()));
        wait_healthy(cluster, &workloads, options, progress).await?;
        true
    };
    let objects: Vec<ObjectDiff> = planned
        .into_iter()
        .map(|p| p.diff)
        .chain(deletions.into_iter().map(|(_, d)| d))
        .collect();
    Ok(SyncReport {
        plan: TargetPlan {
            app: target.app.to_string(),
            environment: target.environment.to_string(),
            cluster: target.cluster.to_string(),
            live: LiveState::Cluster,
            counts: Counts::of(&objects),
            objects,
        },
        healthy,
        elapsed: started.elapsed(),
    })
}

fn list(objects: &[ObjectKey]) -> String {
    objects
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls the workloads until all are healthy, one fails, or the timeout passes.
async fn wait_healthy(
    cluster: &Cluster,
    workloads: &[ObjectKey],
    options: &SyncOptions,
    progress: &(dyn Fn(SyncEvent) + Sync),
) -> Result<(), SyncError> {
    let started = Instant::now();
    let mut last: Vec<Option<Health>> = vec![None; workloads.len()];
    // Short first intervals catch quick rollouts; later ones back off to `options.poll`.
    let mut interval = Duration::from_millis(100).min(options.poll);
    loop {
        let mut all_healthy = true;
        for (key, last) in workloads.iter().zip(last.iter_mut()) {
            if *last == Some(Health::Healthy) {
                continue;
            }
            let health = cluster.health(key).await?;
            if last.as_ref() != Some(&health) {
                progress(SyncEvent::Health(key.clone(), health.clone()));
            }
            if let Health::Failed(reason) = &health {
                return Err(SyncError::RolloutFailed {
                    object: key.clone(),
                    reason: reason.clone(),
                });
            }
            all_healthy &= health == Health::Healthy;
            *last = Some(health);
        }
        if all_healthy {
            return Ok(());
        }
        if started.elapsed() >= options.timeout {
            let (object, health) = workloads
                .iter()
                .zip(last)
                .find(|(_, h)| *h != Some(Health::Healthy))
                .map(|(k, h)| {
                    (
                        k.clone(),
                        h.unwrap_or(Health::Progressing("unknown".into())),
                    )
                })
                .unwrap_or_else(|| (workloads[0].clone(), Health::Progressing("unknown".into())));
            return Err(SyncError::Timeout {
                object,
                waited: started.elapsed(),
                last: health,
            });
        }
        tokio::time::sleep(interval.min(options.timeout.saturating_sub(started.elapsed()))).await;
        interval = (interval * 2).min(options.poll);
    }
}

/// How objects of `app` are compared: its ignore rules and `masker`.
pub fn diff_options_for(app: &Application, masker: &Masker) -> DiffOptions {
    DiffOptions {
        masker: masker.clone(),
        ignore: app.spec.ignore_differences.clone(),
        context: 3,
    }
}

/// One (app, environment) render with its objects and the app's sync policy.
pub struct RenderTarget<'r> {
    /// The application.
    pub app: &'r Application,
    /// The environment.
    pub environment: &'r Environment,
    /// Its effective sync policy.
    pub policy: SyncPolicy,
    /// Rendered objects in apply order.
    pub objects: Vec<RenderedObject>,
    /// The blue/green settings when the app deploys blue/green there (see [`crate::desired`]).
    pub blue_green: Option<crate::config::BlueGreenSettings>,
}

/// The renders that succeed for the selected apps and environments (all when `None`), in
/// application then promotion order. Failed renders are left out (validation reports them).
pub fn render_targets<'r>(
    repo: &'r ConfigRepo,
    app: Option<&str>,
    env: Option<&str>,
) -> Vec<RenderTarget<'r>> {
    crate::render::render_repo(repo, app, env)
        .into_iter()
        .filter_map(|r| {
            let objects = r.result.ok()?;
            let app = &repo.apps.get(&r.app)?.doc;
            let environment = repo.environment(&r.environment)?;
            Some(RenderTarget {
                app,
                environment,
                policy: repo.sync_policy(app),
                blue_green: crate::desired::blue_green_settings(
                    repo,
                    &app.metadata.name,
                    &environment.name,
                ),
                objects,
            })
        })
        .collect()
}

/// The targets of `app`, deleted from the repository, in each environment of `repo` (the
/// commit that still has it): nothing rendered, its sync policy, so that a plan shows what
/// pruning deletes.
pub fn removal_targets<'r>(repo: &'r ConfigRepo, app: &str) -> Vec<RenderTarget<'r>> {
    let Some(doc) = repo.apps.get(app) else {
        return Vec::new();
    };
    repo.app_environments(&doc.doc)
        .into_iter()
        .map(|environment| RenderTarget {
            app: &doc.doc,
            environment,
            policy: repo.sync_policy(&doc.doc),
            objects: Vec::new(),
            blue_green: None,
        })
        .collect()
}

/// The desired objects of `target` in one cluster (see [`crate::desired`]): the render, or
/// for blue/green the versioned state at `revision`, with the Services other than the preview
/// left on the revision the live ones select (the new one when none does yet). Reads those
/// Services from `cluster`: callers pass renders inside their destinations ([`render_targets`]
/// drops the others).
pub async fn desired_objects(
    target: &RenderTarget<'_>,
    cluster: Option<&Cluster>,
    revision: &str,
) -> Vec<RenderedObject> {
    let Some(settings) = &target.blue_green else {
        return target.objects.clone();
    };
    let revision = &crate::desired::revision_name(revision);
    let rendered: Vec<serde_json::Value> =
        target.objects.iter().map(|o| o.object.clone()).collect();
    let mut live = Vec::new();
    if let Some(cluster) = cluster {
        for service in rendered
            .iter()
            .filter(|o| crate::desired::is_service(o) && !crate::desired::is_preview(o, settings))
        {
            let key = ObjectKey::of(service);
            if let Ok(Some(found)) = cluster.get(&key).await {
                live.push((key, found));
            }
        }
    }
    let active = crate::desired::active_revision(&rendered, settings, |o| {
        let key = ObjectKey::of(o);
        live.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    })
    .unwrap_or_else(|| revision.to_string());
    crate::desired::blue_green(&rendered, revision, Some(&active), settings)
        .into_iter()
        .map(RenderedObject::from_value)
        .collect()
}

/// Plans every target against its clusters (connecting once per cluster), or against an empty
/// cluster when none is `configured`. Clusters that cannot be reached are compared with an empty
/// cluster, and the reason is kept in the plan.
pub async fn plan_targets(
    targets: &[RenderTarget<'_>],
    pool: &ClusterPool,
    configured: bool,
    masker: &Masker,
    revision: &str,
    declarations: Option<&dyn Declarations>,
) -> Vec<TargetPlan> {
    let revision = crate::desired::revision_name(revision);
    // One attempt per cluster and plan: an unreachable cluster costs its timeout once.
    let mut connections: std::collections::HashMap<
        (String, String),
        Result<std::sync::Arc<Cluster>, String>,
    > = std::collections::HashMap::new();
    let mut out = Vec::new();
    for target in targets {
        let diff = diff_options_for(target.app, masker);
        let policy = target.policy;
        let destinations = Destinations::of(target.environment);
        // Nothing outside the destinations reaches a cluster, not even a connection or a read
        // of the live Services a blue/green state starts from.
        let refused = target
            .objects
            .iter()
            .map(|o| ObjectKey::of(&o.object))
            .find_map(|k| destinations.check(&k, k.namespace.is_none()).err());
        for (_, wave) in target.environment.waves() {
            for cluster in wave {
                let namespace = target.app.namespace_in(target.environment);
                let key = (cluster.name.clone(), cluster.context.clone());
                if configured && refused.is_none() && !connections.contains_key(&key) {
                    let connected = pool
                        .get(&cluster.name, &cluster.context)
                        .await
                        .map_err(|e| e.to_string());
                    connections.insert(key.clone(), connected);
                }
                let connection = connections
                    .get(&key)
                    .and_then(|c| c.as_ref().ok())
                    .map(|c| &**c)
                    .filter(|_| refused.is_none());
                let objects = desired_objects(target, connection, &revision).await;
                let app_target = AppTarget {
                    app: &target.app.metadata.name,
                    environment: &target.environment.name,
                    cluster: &cluster.name,
                    namespace: &namespace,
                    destinations: &destinations,
                    objects: &objects,
                    prune: policy.prune,
                    force_conflicts: policy.force_conflicts,
                    context: &cluster.context,
                    declarations,
                };
                if let Some(refused) = &refused {
                    out.push(plan_offline(&app_target, &diff, &refused.to_string()));
                    continue;
                }
                if !configured {
                    out.push(plan_offline(
                        &app_target,
                        &diff,
                        "no cluster configured: no --kubeconfig, KUBECONFIG or ~/.kube/config",
                    ));
                    continue;
                }
                let planned = match connections.get(&key) {
                    Some(Ok(c)) => plan_with(c, &app_target, &diff, policy.create_namespace)
                        .await
                        .map_err(|e| e.to_string()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("not connected".to_string()),
                };
                out.push(
                    planned.unwrap_or_else(|reason| plan_offline(&app_target, &diff, &reason)),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ConnectOptions;
    use crate::config::DestinationsSpec;
    use kube_api_test_server::TestServer;
    use serde_json::json;

    fn config_map(namespace: &str) -> RenderedObject {
        RenderedObject {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(namespace.into()),
            name: "web".into(),
            source: "apps/web/manifests/cm.yaml".into(),
            line: 1,
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "web", "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "bowline", "bowline.dev/app": "web"},
                    "annotations": {"bowline.dev/app": "web", "bowline.dev/environment": "staging"}},
                "data": {"k": "v"}}),
        }
    }

    async fn connect(server: &TestServer) -> (Cluster, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig("test")).expect("kubeconfig");
        let options = ConnectOptions {
            kubeconfig: Some(kubeconfig),
            ..ConnectOptions::default()
        };
        let cluster = Cluster::connect("staging-eu", "test", &options)
            .await
            .expect("connect");
        (cluster, dir)
    }

    /// Declarations for tests: which app declares which ConfigMap (by name); `None` for the
    /// apps listed as unknown.
    #[derive(Debug)]
    struct Declared {
        by: Vec<(&'static str, &'static str)>,
        unknown: Vec<&'static str>,
    }

    impl Declarations for Declared {
        fn declares(&self, app: &str, _context: &str, key: &ObjectKey) -> Option<bool> {
            if self.unknown.contains(&app) {
                return None;
            }
            Some(self.by.iter().any(|(a, n)| *a == app && *n == key.name))
        }

        fn others_declaring(&self, app: &str, _context: &str, key: &ObjectKey) -> Vec<String> {
            self.by
                .iter()
                .filter(|(a, n)| *a != app && *n == key.name)
                .map(|(a, _)| a.to_string())
                .collect()
        }
    }

    /// `config_map` of another app: its labels and annotations.
    fn of_app(mut object: RenderedObject, app: &str) -> RenderedObject {
        for field in ["labels", "annotations"] {
            object.object["metadata"][field]["bowline.dev/app"] = json!(app);
        }
        object
    }

    #[tokio::test]
    async fn an_object_moved_between_apps_is_handed_over_never_pruned() {
        let server = TestServer::start();
        let (cluster, _dir) = connect(&server).await;
        let destinations =
            Destinations::from_spec("staging", &DestinationsSpec::default(), "shop-staging");
        let options = DiffOptions::default();
        let quick = SyncOptions {
            wait: false,
            ..SyncOptions::default()
        };
        let old_objects = vec![config_map("shop-staging")];
        let old = AppTarget {
            app: "web",
            environment: "staging",
            cluster: "staging-eu",
            namespace: "shop-staging",
            destinations: &destinations,
            objects: &old_objects,
            prune: true,
            force_conflicts: false,
            context: "test",
            declarations: None,
        };
        sync(&cluster, &old, &options, &quick, &|_| {})
            .await
            .expect("web applies its ConfigMap");

        // The commit moves the ConfigMap from web to api.
        let moved = Declared {
            by: vec![("api", "web")],
            unknown: vec![],
        };
        let web = AppTarget {
            objects: &[],
            declarations: Some(&moved),
            ..old.clone()
        };
        let plan = plan_with(&cluster, &web, &options, true)
            .await
            .expect("plan");
        assert_eq!(plan.counts.delete, 0, "{:?}", plan.objects);
        let api_objects = vec![of_app(config_map("shop-staging"), "api")];
        let api = AppTarget {
            app: "api",
            objects: &api_objects,
            declarations: Some(&moved),
            ..old.clone()
        };
        let plan = plan_with(&cluster, &api, &options, true)
            .await
            .expect("plan");
        let handed = plan
            .objects
            .iter()
            .find(|o| o.key.kind == "ConfigMap")
            .expect("the ConfigMap is planned");
        assert_eq!(handed.action, Action::Update, "{handed:?}");
        assert_eq!(handed.taken_over_from.as_deref(), Some("web"));
        assert!(
            handed
                .unified
                .starts_with("! taken over from bowline app web, which no longer declares it"),
            "{}",
            handed.unified
        );

        // While web still declares it, or nothing is known of web's render, api is refused.
        for declared in [
            Declared {
                by: vec![("api", "web"), ("web", "web")],
                unknown: vec![],
            },
            Declared {
                by: vec![("api", "web")],
                unknown: vec!["web"],
            },
        ] {
            let refused = AppTarget {
                declarations: Some(&declared),
                ..api.clone()
            };
            let plan = plan_with(&cluster, &refused, &options, true)
                .await
                .expect("plan");
            assert!(
                plan.objects.iter().any(|o| o.action == Action::Refuse),
                "{:?}",
                plan.objects
            );
        }
        let refused = AppTarget {
            declarations: None,
            ..api.clone()
        };
        let err = sync(&cluster, &refused, &options, &quick, &|_| {})
            .await
            .expect_err("not taken over without declarations");
        assert!(err.to_string().contains("web"), "{err}");

        // Either order of the two syncs ends with api owning the ConfigMap and nothing pruned.
        sync(&cluster, &web, &options, &quick, &|_| {})
            .await
            .expect("web syncs without it");
        sync(&cluster, &api, &options, &quick, &|_| {})
            .await
            .expect("api takes it over");
        let live = server
            .get("v1", "ConfigMap", Some("shop-staging"), "web")
            .expect("still there");
        assert_eq!(live["metadata"]["labels"]["bowline.dev/app"], "api");
        assert_eq!(live["metadata"]["annotations"]["bowline.dev/app"], "api");
        let plan = plan_with(&cluster, &api, &options, true)
            .await
            .expect("plan");
        assert!(
            plan.objects.iter().all(|o| o.action == Action::Unchanged),
            "{:?}",
            plan.objects
        );
    }

    #[tokio::test]
    async fn a_removed_app_takes_its_namespace_only_when_no_other_app_uses_it() {
        let server = TestServer::start();
        let (cluster, _dir) = connect(&server).await;
        let destinations =
            Destinations::from_spec("staging", &DestinationsSpec::default(), "shop-staging");
        let objects = vec![config_map("shop-staging")];
        let target = AppTarget {
            app: "web",
            environment: "staging",
            cluster: "staging-eu",
            namespace: "shop-staging",
            destinations: &destinations,
            objects: &objects,
            prune: true,
            force_conflicts: false,
            context: "test",
            declarations: None,
        };
        let removed = AppTarget {
            objects: &[],
            ..target.clone()
        };
        let options = DiffOptions::default();
        let deploy = SyncOptions {
            wait: false,
            ..SyncOptions::default()
        };
        let removal = SyncOptions {
            create_namespace: false,
            ..deploy.clone()
        };
        let deletes = |plan: &TargetPlan| -> Vec<String> {
            assert_eq!(plan.counts.delete, plan.objects.len());
            plan.objects.iter().map(|o| o.key.to_string()).collect()
        };

        // Alone in it: the namespace bowline created for the app goes too, last.
        sync(&cluster, &target, &options, &deploy, &|_| {})
            .await
            .expect("deploy");
        assert!(
            server
                .get("v1", "Namespace", None, "shop-staging")
                .is_some()
        );
        let plan = plan_with(&cluster, &removed, &options, false)
            .await
            .expect("plan");
        assert_eq!(
            deletes(&plan),
            ["v1 ConfigMap shop-staging/web", "v1 Namespace shop-staging"]
        );
        sync(&cluster, &removed, &options, &removal, &|_| {})
            .await
            .expect("removal");
        assert!(
            server
                .get("v1", "Namespace", None, "shop-staging")
                .is_none()
        );

        // Another app's object in it keeps it.
        sync(&cluster, &target, &options, &deploy, &|_| {})
            .await
            .expect("deploy again");
        let mut other = config_map("shop-staging").object;
        other["metadata"]["name"] = json!("api");
        other["metadata"]["labels"]["bowline.dev/app"] = json!("api");
        other["metadata"]["annotations"]["bowline.dev/app"] = json!("api");
        server.create(other);
        let plan = plan_with(&cluster, &removed, &options, false)
            .await
            .expect("plan");
        assert_eq!(deletes(&plan), ["v1 ConfigMap shop-staging/web"]);
        sync(&cluster, &removed, &options, &removal, &|_| {})
            .await
            .expect("removal");
        assert!(
            server
                .get("v1", "ConfigMap", Some("shop-staging"), "web")
                .is_none()
        );
        assert!(
            server
                .get("v1", "ConfigMap", Some("shop-staging"), "api")
                .is_some()
        );
        assert!(
            server
                .get("v1", "Namespace", None, "shop-staging")
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_missing_namespace_is_planned_without_dry_runs_into_it() {
        let server = TestServer::start();
        let (cluster, _dir) = connect(&server).await;
        let destinations =
            Destinations::from_spec("staging", &DestinationsSpec::default(), "shop-staging");
        let objects = vec![config_map("shop-staging")];
        let target = AppTarget {
            app: "web",
            environment: "staging",
            cluster: "staging-eu",
            namespace: "shop-staging",
            destinations: &destinations,
            objects: &objects,
            prune: true,
            force_conflicts: false,
            context: "test",
            declarations: None,
        };
        let options = DiffOptions::default();

        let created = plan_with(&cluster, &target, &options, true)
            .await
            .expect("plan");
        let actions: Vec<(String, Action)> = created
            .objects
            .iter()
            .map(|o| (o.key.to_string(), o.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("v1 Namespace shop-staging".to_string(), Action::Create),
                ("v1 ConfigMap shop-staging/web".to_string(), Action::Create),
            ]
        );
        assert_eq!(created.live, LiveState::Cluster);
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.method == "GET" || r.status < 400),
            "no write was refused: {:?}",
            server.requests()
        );
        assert!(
            !server
                .requests()
                .iter()
                .any(|r| r.dry_run && r.path.contains("/namespaces/shop-staging/")),
            "a dry-run into the missing namespace: {:?}",
            server.requests()
        );

        let refused = plan_with(&cluster, &target, &options, false)
            .await
            .expect("plan");
        assert_eq!(refused.objects[0].action, Action::Refuse);
        assert!(
            refused.objects[0].unified.contains(
                "does not exist in cluster staging-eu and syncPolicy.createNamespace is false"
            ),
            "{}",
            refused.objects[0].unified
        );
        let sync_options = SyncOptions {
            create_namespace: false,
            ..SyncOptions::default()
        };
        let err = sync(&cluster, &target, &options, &sync_options, &|_| {})
            .await
            .expect_err("no namespace");
        assert_eq!(
            err.to_string(),
            "namespace \"shop-staging\" does not exist in cluster staging-eu and syncPolicy.createNamespace is false: create it, or set createNamespace to true"
        );

        // Objects going elsewhere only: with createNamespace false, the unused environment
        // namespace is no reason to fail.
        server.create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        );
        let wide = Destinations::from_spec(
            "staging",
            &DestinationsSpec {
                namespaces: vec!["shop-staging".into(), "other".into()],
                ..DestinationsSpec::default()
            },
            "shop-staging",
        );
        let elsewhere = vec![config_map("other")];
        let target = AppTarget {
            destinations: &wide,
            objects: &elsewhere,
            ..target
        };
        sync(&cluster, &target, &options, &sync_options, &|_| {})
            .await
            .expect("sync into the existing namespace");
        assert!(
            server
                .get("v1", "Namespace", None, "shop-staging")
                .is_none()
        );
        assert!(
            server
                .get("v1", "ConfigMap", Some("other"), "web")
                .is_some()
        );

        // For deploy stages applying their own objects.
        let err = ensure_namespace(&cluster, "shop-staging", "web", "staging", false)
            .await
            .expect_err("not created");
        assert!(matches!(err, SyncError::NamespaceMissing { .. }), "{err}");
        assert!(
            ensure_namespace(&cluster, "shop-staging", "web", "staging", true)
                .await
                .expect("created")
        );
        let created = server
            .get("v1", "Namespace", None, "shop-staging")
            .expect("namespace");
        assert!(crate::cluster::prune::is_ours(&created, "web", "staging"));
        assert!(
            !ensure_namespace(&cluster, "shop-staging", "web", "staging", false)
                .await
                .expect("exists")
        );
    }
}
