//! `deploy` (strategies rolling, blueGreen and canary), `canaryAnalysis`, `promote` and
//! `rollback`: the stages that change clusters.
//!
//! * **rolling**: apply the rendered objects (with the stage's maxSurge/maxUnavailable) and
//!   wait until healthy, cluster by cluster in wave order.
//! * **canary**: next to production, a `<name>-baseline` Deployment running the current
//!   production pod template and a `<name>-canary` Deployment running the new one, labelled
//!   `bowline.dev/track: baseline|canary` so metrics can tell them apart, both behind the
//!   production Service (which selects neither track). `promote` applies the new version to
//!   production and removes both; `rollback` removes both and leaves production untouched.
//! * **blueGreen**: a `<name>-<revision>` Deployment whose pods carry
//!   `bowline.dev/revision`; once healthy, the Services are switched to it (at once with
//!   `autoPromote`, else by `promote`), the previous one is kept for `scaleDownDelay` for an
//!   instant rollback, then scaled to zero.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::StageRun;
use super::outputs::{
    Applied, BlueGreenCheckpoint, BlueGreenOutputs, CanaryWorkload, ClustersCheckpoint,
    DeployOutputs, HEALTHY, PromoteOutputs, RollbackOutputs, RolledBack, to_value,
};
use crate::canary::analysis::{self, Plan, Request, Status};
use crate::canary::retrieval::{PrometheusSource, Scope};
use crate::cluster::{Cluster, health};
use crate::config::{CanaryAnalysisStage, DeployStage, IntOrPercent, StageType, Strategy};
use crate::desired::{self, is_deployment, is_preview, is_service};
use crate::diff::{DiffOptions, ObjectKey};
use crate::pipeline::snapshot::EnvSnapshot;
use crate::pipeline::{StageError, StageResult};
use crate::render::RenderedObject;
use crate::store::{AppliedRevision, StageStatus};
use crate::sync::{self, AppTarget, SyncEvent, SyncOptions};

use crate::desired::REVISION_LABEL;

fn rendered(objects: &[Value]) -> Vec<RenderedObject> {
    objects
        .iter()
        .cloned()
        .map(RenderedObject::from_value)
        .collect()
}

async fn connect(
    run: &StageRun,
    cluster: &crate::config::Cluster,
) -> Result<std::sync::Arc<Cluster>, StageError> {
    Ok(run
        .engine
        .services
        .clusters
        .get(&cluster.name, &cluster.context)
        .await?)
}

/// Clusters of the environment in wave order.
fn clusters(env: &EnvSnapshot) -> Vec<crate::config::Cluster> {
    let mut clusters = env.clusters.clone();
    clusters.sort_by_key(|c| c.wave);
    clusters
}

/// Syncs `objects` to every cluster of the stage's environment and waits until healthy,
/// recording what was applied per cluster. Clusters already done (after a restart) are
/// synced again, which only dry-runs: nothing changed means nothing is written.
async fn sync_env(run: &mut StageRun, objects: &[Value], record: bool) -> Result<(), StageError> {
    sync_env_in(run, objects, record, false).await
}

/// [`sync_env`], the clusters in reverse wave order when `reverse` (a removal undoes the
/// rollout in the opposite order).
async fn sync_env_in(
    run: &mut StageRun,
    objects: &[Value],
    record: bool,
    reverse: bool,
) -> Result<(), StageError> {
    let (env_name, env) = run.environment()?;
    let env_name = env_name.to_string();
    let env = env.clone();
    let rendered = rendered(objects);
    let diff = DiffOptions {
        ignore: run.snapshot.ignore_differences.clone(),
        ..DiffOptions::default()
    };
    let app = run.snapshot.app["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let timeout = run.remaining().unwrap_or(Duration::from_secs(600));
    let destinations = env.destinations(&env_name);
    let mut order = clusters(&env);
    if reverse {
        order.reverse();
    }
    let declarations = crate::check::current(&run.engine.services.declarations);
    for cluster in order {
        let target = AppTarget {
            app: &app,
            environment: &env_name,
            cluster: &cluster.name,
            namespace: &env.namespace,
            destinations: &destinations,
            objects: &rendered,
            prune: run.snapshot.prune,
            force_conflicts: run.snapshot.force_conflicts,
            context: &cluster.context,
            declarations: declarations
                .as_deref()
                .map(|d| d as &dyn crate::cluster::prune::Declarations),
        };
        let options = SyncOptions {
            timeout,
            poll: run.engine.services.poll,
            create_namespace: run.snapshot.create_namespace,
            ..SyncOptions::default()
        };
        // Refused before connecting: nothing outside the destinations reaches a cluster.
        sync::check_destinations(&target)?;
        let connected = connect(run, &cluster).await?;
        let stage = run.stage.name.clone();
        let engine = run.engine.clone();
        let cluster_name = cluster.name.clone();
        let execution = run.execution.clone();
        let progress = move |event: SyncEvent| {
            let message = match event {
                SyncEvent::Applied(d) if d.action != crate::diff::Action::Unchanged => {
                    format!("{cluster_name}: {} {}", d.action.as_str(), d.key)
                }
                SyncEvent::Pruned(key) => {
                    // Every deletion is in the event log, for the audit trail.
                    let message = format!("{cluster_name}: pruned {key}");
                    let _ = engine.store.log(&execution, Some(&stage), &message);
                    message
                }
                SyncEvent::Health(key, h) => format!("{cluster_name}: {key} {h}"),
                _ => return,
            };
            engine.progress(crate::pipeline::Progress::Note {
                stage: stage.clone(),
                message,
            });
        };
        let report = sync::sync(&connected, &target, &diff, &options, &progress).await?;
        let c = report.plan.counts;
        if objects.is_empty() {
            run.note(&format!("{}: {} deleted", cluster.name, c.delete));
        } else {
            run.note(&format!(
                "{}: {} created, {} updated, {} unchanged, {} pruned; healthy",
                cluster.name, c.create, c.update, c.unchanged, c.delete
            ));
        }
        if record {
            run.engine.store.save_applied(&AppliedRevision {
                app: app.clone(),
                environment: env_name.clone(),
                cluster: cluster.name.clone(),
                revision: run.revision.clone(),
                objects: objects.to_vec(),
                execution: run.execution.clone(),
                applied_at: Utc::now(),
            })?;
        }
        let mut done: ClustersCheckpoint = run.outputs_as()?;
        done.clusters.insert(cluster.name.clone(), HEALTHY.into());
        run.checkpoint_as(&done)?;
    }
    Ok(())
}

/// `remove`, the stage of a removal execution: the app was deleted from the tracked branch
/// with `prune` on, so everything bowline created for it in the environment is deleted (by
/// pruning against an empty desired state: only objects carrying its labels and annotations,
/// inside the destinations; its namespace only when bowline created it and no other app uses
/// it), cluster by cluster in reverse wave order. The empty state is recorded as deployed.
pub(super) async fn remove(run: &mut StageRun) -> StageResult {
    if !run.snapshot.prune {
        return Err(StageError::terminal(
            "removal needs prune (the app's syncPolicy.prune)",
        ));
    }
    sync_env_in(run, &[], true, true).await?;
    Ok(run.state.outputs.clone())
}

pub(super) async fn deploy(run: &mut StageRun, stage: DeployStage) -> StageResult {
    let (_, env) = run.environment()?;
    let objects = env.objects.clone();
    run.checkpoint_as(&DeployOutputs {
        strategy: Some(stage.strategy),
        ..DeployOutputs::default()
    })?;
    match stage.strategy {
        Strategy::Rolling => {
            let objects = with_rolling_settings(&objects, &stage);
            sync_env(run, &objects, true).await?;
            Ok(run.state.outputs.clone())
        }
        Strategy::Canary => deploy_canary(run, &stage, &objects).await,
        Strategy::BlueGreen => deploy_blue_green(run, &stage, &objects).await,
    }
}

/// The objects with the stage's rolling settings on every Deployment.
fn with_rolling_settings(objects: &[Value], stage: &DeployStage) -> Vec<Value> {
    let Some(rolling) = &stage.rolling else {
        return objects.to_vec();
    };
    let text = |v: &IntOrPercent| match v {
        IntOrPercent::Int(n) => json!(n),
        IntOrPercent::Percent(p) => json!(p),
    };
    objects
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if is_deployment(&o) {
                let mut update = serde_json::Map::new();
                if let Some(s) = &rolling.max_surge {
                    update.insert("maxSurge".into(), text(s));
                }
                if let Some(u) = &rolling.max_unavailable {
                    update.insert("maxUnavailable".into(), text(u));
                }
                o["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": update});
            }
            o
        })
        .collect()
}

async fn deploy_canary(run: &mut StageRun, stage: &DeployStage, objects: &[Value]) -> StageResult {
    let settings = stage.canary.clone().unwrap_or_default();
    let (_, env) = run.environment()?;
    let env = env.clone();
    let mut created = Vec::new();
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        let mut workloads = Vec::new();
        for d in objects.iter().filter(|o| is_deployment(o)) {
            let key = ObjectKey::of(d);
            let production = connected.get(&key).await?.ok_or_else(|| {
                StageError::terminal(format!(
                    "{}: canary needs a running production version of {key} to compare with; deploy it first (rolling)",
                    cluster.name
                ))
            })?;
            workloads.extend(desired::canary_tracks(d, &production, &settings));
        }
        // Recorded before they are applied, so that whatever ends the execution removes them.
        created.extend(workloads.iter().map(|w| CanaryWorkload {
            cluster: cluster.name.clone(),
            key: ObjectKey::of(w),
        }));
        run.checkpoint_as(&DeployOutputs {
            canary_workloads: Some(created.clone()),
            ..DeployOutputs::default()
        })?;
        // Resumed after a restart, a cluster already applied is only waited for.
        if !applied_in(run, &cluster.name, &Applied::Tracks(true))? {
            for w in &workloads {
                connected
                    .apply(w, false, run.snapshot.force_conflicts)
                    .await?;
                run.note(&format!("{}: applied {}", cluster.name, ObjectKey::of(w)));
            }
            mark_applied(run, &cluster.name, Applied::Tracks(true))?;
        }
        wait_healthy(run, &connected, &workloads).await?;
    }
    Ok(run.state.outputs.clone())
}

async fn wait_healthy(
    run: &StageRun,
    cluster: &Cluster,
    workloads: &[Value],
) -> Result<(), StageError> {
    let deadline = run.remaining().map(|r| tokio::time::Instant::now() + r);
    for w in workloads {
        let key = ObjectKey::of(w);
        loop {
            match cluster.health(&key).await? {
                health::Health::Healthy => break,
                health::Health::Failed(reason) => {
                    // Will not get healthy without a change.
                    return Err(StageError::terminal(format!(
                        "rollout of {key} failed: {reason}"
                    )));
                }
                health::Health::Progressing(m) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Err(StageError::transient(format!(
                            "timed out waiting for {key}: {m}"
                        )));
                    }
                }
            }
            tokio::time::sleep(run.engine.services.poll.min(Duration::from_millis(500))).await;
        }
    }
    Ok(())
}

async fn deploy_blue_green(
    run: &mut StageRun,
    stage: &DeployStage,
    objects: &[Value],
) -> StageResult {
    let settings = stage.blue_green.clone().unwrap_or_default();
    let revision = desired::revision_name(&run.revision);
    // Versioned Deployments and the preview Service go now; the other Services keep routing
    // to the active revision until the switch.
    let state = desired::blue_green(objects, &revision, None, &settings);
    let versioned: Vec<Value> = state.iter().filter(|o| is_deployment(o)).cloned().collect();
    let others: Vec<Value> = state
        .iter()
        .filter(|o| !is_deployment(o))
        .cloned()
        .collect();
    let (_, env) = run.environment()?;
    let env = env.clone();
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        // Resumed after a restart, a cluster already applied is only waited for: nothing
        // is applied twice.
        if !applied_in(run, &cluster.name, &Applied::Revision(revision.clone()))? {
            ensure_namespace(run, &connected, &env.namespace).await?;
            for o in others.iter().chain(&versioned) {
                connected
                    .apply(o, false, run.snapshot.force_conflicts)
                    .await?;
            }
            mark_applied(run, &cluster.name, Applied::Revision(revision.clone()))?;
        }
        wait_healthy(run, &connected, &versioned).await?;
        run.note(&format!("{}: revision {revision} is healthy", cluster.name));
    }
    let delay = settings
        .scale_down_delay
        .map(|d| d.0.as_secs())
        .unwrap_or(30);
    let current: BlueGreenCheckpoint = run.outputs_as()?;
    if current.blue_green.as_ref().map(|bg| bg.revision.as_str()) != Some(revision.as_str()) {
        run.checkpoint_as(&BlueGreenCheckpoint {
            blue_green: Some(BlueGreenOutputs {
                revision: revision.clone(),
                switched: false,
                scale_down_delay: Some(delay),
                settings: settings.clone(),
                previous: None,
                switched_at: None,
            }),
            previous_scaled_down: None,
        })?;
    }
    if settings.auto_promote {
        let current: BlueGreenCheckpoint = run.outputs_as()?;
        if !current.blue_green.is_some_and(|bg| bg.switched) {
            switch_services(run, objects, &revision, &settings).await?;
        }
        record_applied(
            run,
            &desired::blue_green(objects, &revision, Some(&revision), &settings),
        )?;
        scale_down_previous(run, objects, &revision, Duration::from_secs(delay)).await?;
    }
    Ok(run.state.outputs.clone())
}

/// Whether this stage already applied `what` to `cluster` (checkpointed under `applied`), so a
/// resumed stage only waits for health there.
fn applied_in(run: &StageRun, cluster: &str, what: &Applied) -> Result<bool, StageError> {
    Ok(run.outputs_as::<DeployOutputs>()?.applied_in(cluster, what))
}

/// Checkpoints that `what` was applied to `cluster`.
fn mark_applied(run: &mut StageRun, cluster: &str, what: Applied) -> Result<(), StageError> {
    let mut applied = run
        .outputs_as::<DeployOutputs>()?
        .applied
        .unwrap_or_default();
    applied.insert(cluster.to_string(), what);
    run.checkpoint_as(&DeployOutputs {
        applied: Some(applied),
        ..DeployOutputs::default()
    })
}

/// Creates the app's namespace in `cluster` when it is missing (or fails naming it when
/// `syncPolicy.createNamespace` is false), as a sync does before applying.
async fn ensure_namespace(
    run: &StageRun,
    cluster: &Cluster,
    namespace: &str,
) -> Result<(), StageError> {
    let (env_name, _) = run.environment()?;
    let app = run.snapshot.app["name"].as_str().unwrap_or_default();
    let created = sync::ensure_namespace(
        cluster,
        namespace,
        app,
        env_name,
        run.snapshot.create_namespace,
    )
    .await?;
    if created {
        run.note(&format!(
            "{}: created namespace {namespace}",
            cluster.name()
        ));
    }
    Ok(())
}

/// Points every rendered Service at the pods of `revision` (keeping its selector otherwise),
/// remembering the previous revision for rollback.
async fn switch_services(
    run: &mut StageRun,
    objects: &[Value],
    revision: &str,
    settings: &crate::config::BlueGreenSettings,
) -> Result<(), StageError> {
    let (_, env) = run.environment()?;
    let env = env.clone();
    let mut previous: Option<String> = None;
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        for service in objects
            .iter()
            .filter(|o| is_service(o) && !is_preview(o, settings))
        {
            if let Some(live) = connected.get(&ObjectKey::of(service)).await? {
                previous = previous.or_else(|| {
                    live["spec"]["selector"][REVISION_LABEL]
                        .as_str()
                        .map(str::to_string)
                });
            }
            let s = desired::selecting(service, revision);
            connected
                .apply(&s, false, run.snapshot.force_conflicts)
                .await?;
            run.note(&format!(
                "{}: {} now routes to revision {revision}",
                cluster.name,
                ObjectKey::of(&s)
            ));
        }
    }
    let mut bg = run
        .outputs_as::<BlueGreenCheckpoint>()?
        .blue_green
        .unwrap_or_default();
    bg.switched = true;
    bg.previous = Some(previous);
    bg.switched_at = Some(Utc::now());
    run.checkpoint_as(&BlueGreenCheckpoint {
        blue_green: Some(bg),
        previous_scaled_down: None,
    })
}

/// The deploy stage of this stage's environment in the same execution, with its outputs.
fn deploy_stage_of(run: &StageRun) -> Result<Option<DeployOutputs>, StageError> {
    let env = run.stage.environment.clone();
    let states = run.engine.store.stages(&run.execution)?;
    states
        .into_iter()
        .rfind(|s| {
            s.kind() == Some(StageType::Deploy)
                && s.environment == env
                && s.status == StageStatus::Succeeded
        })
        .map(|s| super::outputs::read(&s.name, &s.outputs))
        .transpose()
}

/// Removes the canary tracks that the deploy stages of `execution` left running when it ends
/// without a promote or rollback having removed them (rejected, canceled, failed, or a
/// pipeline with neither): tracks exist only while their execution runs. Best effort, in
/// reverse wave order; what is removed, or cannot be, goes to the event log.
#[tracing::instrument(level = "info", skip(engine, snapshot))]
pub(crate) async fn remove_leftover_tracks(
    engine: &crate::pipeline::Engine,
    execution: &str,
    snapshot: &crate::pipeline::Snapshot,
) {
    let Ok(states) = engine.store.stages(execution) else {
        return;
    };
    for state in states
        .iter()
        .filter(|s| s.kind() == Some(StageType::Deploy))
    {
        let Some(env) = state
            .environment
            .as_ref()
            .and_then(|e| snapshot.environments.get(e))
        else {
            continue;
        };
        let log = |message: &str| {
            tracing::info!(execution, stage = %state.name, "{message}");
            let _ = engine.store.log(execution, Some(&state.name), message);
        };
        let outputs: DeployOutputs = match super::outputs::read(&state.name, &state.outputs) {
            Ok(outputs) => outputs,
            Err(e) => {
                log(&format!("could not read the canary tracks: {e}"));
                continue;
            }
        };
        for cluster in clusters(env).into_iter().rev() {
            let tracks = outputs.canary_tracks(&cluster.name);
            if tracks.is_empty() {
                continue;
            }
            let connected = match engine
                .services
                .clusters
                .get(&cluster.name, &cluster.context)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    log(&format!(
                        "{}: could not remove the canary tracks: {e}",
                        cluster.name
                    ));
                    continue;
                }
            };
            for key in tracks {
                match connected.delete(&key, false).await {
                    Ok(true) => log(&format!(
                        "{}: removed {key}: the execution ended without promoting or rolling back",
                        cluster.name
                    )),
                    Ok(false) => {} // removed by promote or rollback
                    Err(e) => log(&format!(
                        "{}: could not remove the canary track {key}: {e}",
                        cluster.name
                    )),
                }
            }
        }
    }
}

async fn delete_canary_workloads(
    run: &mut StageRun,
    outputs: &DeployOutputs,
) -> Result<(), StageError> {
    let (_, env) = run.environment()?;
    let env = env.clone();
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        for key in outputs.canary_tracks(&cluster.name) {
            connected.delete(&key, false).await?;
            run.note(&format!("{}: removed {key}", cluster.name));
        }
    }
    Ok(())
}

pub(super) async fn promote(run: &mut StageRun) -> StageResult {
    let Some(deployed) = deploy_stage_of(run)? else {
        return Err(StageError::terminal(
            "nothing to promote: no successful deploy stage for this environment",
        ));
    };
    let (_, env) = run.environment()?;
    let objects = env.objects.clone();
    match deployed.strategy() {
        Strategy::Canary => {
            let done: PromoteOutputs = run.outputs_as()?;
            if done.production.as_deref() != Some(HEALTHY) {
                sync_env(run, &objects, true).await?;
                run.checkpoint_as(&PromoteOutputs {
                    production: Some(HEALTHY.into()),
                    ..PromoteOutputs::default()
                })?;
            }
            delete_canary_workloads(run, &deployed).await?;
            to_value(&PromoteOutputs {
                promoted: Some(Strategy::Canary),
                production: Some(HEALTHY.into()),
                ..PromoteOutputs::default()
            })
        }
        Strategy::BlueGreen => {
            let deployed_bg = deployed.blue_green.clone().unwrap_or_default();
            let revision = deployed_bg.revision.clone();
            let settings = deployed_bg.settings.clone();
            let done: PromoteOutputs = run.outputs_as()?;
            if !deployed_bg.switched && done.switched.is_none() {
                // This stage carries the deploy stage's blue/green state on from here.
                run.state.outputs = crate::pipeline::merged(
                    &run.state.outputs,
                    to_value(&BlueGreenCheckpoint {
                        blue_green: deployed.blue_green.clone(),
                        previous_scaled_down: None,
                    })?,
                );
                switch_services(run, &objects, &revision, &settings).await?;
                run.checkpoint_as(&PromoteOutputs {
                    switched: Some(true),
                    ..PromoteOutputs::default()
                })?;
            }
            let delay = Duration::from_secs(deployed_bg.delay());
            scale_down_previous(run, &objects, &revision, delay).await?;
            // What drift and self-heal compare with: the switched blue/green state, never the
            // plain render (which would route the Services to every revision).
            record_applied(
                run,
                &desired::blue_green(&objects, &revision, Some(&revision), &settings),
            )?;
            // The switch is part of this stage's result, so that a later rollback stage
            // can route back.
            // Switched by the deploy stage (`autoPromote`): its state is the switched one.
            let mut switched = run
                .outputs_as::<BlueGreenCheckpoint>()?
                .blue_green
                .unwrap_or(deployed_bg);
            switched.switched = true;
            to_value(&PromoteOutputs {
                promoted: Some(Strategy::BlueGreen),
                revision: Some(revision),
                blue_green: Some(switched),
                ..PromoteOutputs::default()
            })
        }
        Strategy::Rolling => {
            run.note("rolling deploys are live once healthy: nothing to promote");
            to_value(&PromoteOutputs {
                promoted: Some(Strategy::Rolling),
                ..PromoteOutputs::default()
            })
        }
    }
}

fn record_applied(run: &StageRun, objects: &[Value]) -> Result<(), StageError> {
    let (env_name, env) = run.environment()?;
    for cluster in &env.clusters {
        run.engine.store.save_applied(&AppliedRevision {
            app: run.snapshot.app["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            environment: env_name.to_string(),
            cluster: cluster.name.clone(),
            revision: run.revision.clone(),
            objects: objects.to_vec(),
            execution: run.execution.clone(),
            applied_at: Utc::now(),
        })?;
    }
    Ok(())
}

/// After a switch to `revision`: keeps the previous revision running for `delay` (the window
/// of an instant rollback), then scales it to zero. Once done, it is checkpointed and not
/// repeated on resume.
async fn scale_down_previous(
    run: &mut StageRun,
    objects: &[Value],
    revision: &str,
    delay: Duration,
) -> Result<(), StageError> {
    let done: BlueGreenCheckpoint = run.outputs_as()?;
    let previous = done
        .blue_green
        .as_ref()
        .and_then(|bg| bg.previous_revision())
        .map(str::to_string);
    let Some(previous) = previous.filter(|p| *p != revision) else {
        return Ok(());
    };
    if done.previous_scaled_down == Some(true) {
        return Ok(());
    }
    run.note(&format!(
        "keeping revision {previous} for {}s for an instant rollback",
        delay.as_secs()
    ));
    tokio::time::sleep(delay).await;
    scale_revision(run, objects, &previous, 0).await?;
    run.checkpoint_as(&BlueGreenCheckpoint {
        blue_green: None,
        previous_scaled_down: Some(true),
    })
}

/// The blue/green switch of this stage's environment in the same execution, if one
/// happened, from the deploy stage (`autoPromote`) or the promote stage.
fn blue_green_switch(run: &StageRun) -> Result<Option<BlueGreenOutputs>, StageError> {
    let states = run.engine.store.stages(&run.execution)?;
    let mut switch = None;
    for s in states
        .iter()
        .filter(|s| s.environment == run.stage.environment)
        .filter(|s| matches!(s.kind(), Some(StageType::Deploy | StageType::Promote)))
    {
        let outputs: BlueGreenCheckpoint = super::outputs::read(&s.name, &s.outputs)?;
        if let Some(bg) = outputs.blue_green.filter(|bg| bg.switched) {
            switch = Some(bg);
        }
    }
    Ok(switch)
}

async fn scale_revision(
    run: &mut StageRun,
    objects: &[Value],
    revision: &str,
    replicas: i64,
) -> Result<(), StageError> {
    let (_, env) = run.environment()?;
    let env = env.clone();
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        for d in objects.iter().filter(|o| is_deployment(o)) {
            let mut key = ObjectKey::of(d);
            key.name = format!("{}-{revision}", key.name);
            if let Some(mut live) = connected.get(&key).await? {
                crate::diff::normalize(&mut live);
                live["spec"]["replicas"] = json!(replicas);
                connected.apply(&live, false, true).await?;
                run.note(&format!("{}: scaled {key} to {replicas}", cluster.name));
            }
        }
    }
    Ok(())
}

pub(super) async fn rollback(run: &mut StageRun) -> StageResult {
    let deploy = deploy_stage_of(run)?;
    let (env_name, env) = run.environment()?;
    let env_name = env_name.to_string();
    let env = env.clone();
    let objects = env.objects.clone();
    let strategy = deploy.as_ref().map(DeployOutputs::strategy);
    match (strategy, deploy) {
        (Some(Strategy::Canary), Some(outputs)) => {
            delete_canary_workloads(run, &outputs).await?;
            run.note("production was not changed by the canary");
            to_value(&RollbackOutputs::of(RolledBack::Canary))
        }
        (Some(Strategy::BlueGreen), Some(outputs)) => {
            if let Some(switch) = blue_green_switch(run)? {
                // Instant rollback: route back to the previous revision (scaled up again if
                // its keep-alive window had passed), then scale the new one down.
                let revision = switch.revision.clone();
                let previous = switch
                    .previous_revision()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        StageError::terminal(format!(
                            "revision {revision} was the first one: no previous revision to route back to"
                        ))
                    })?;
                for d in objects.iter().filter(|o| is_deployment(o)) {
                    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                    scale_revision(run, std::slice::from_ref(d), &previous, replicas).await?;
                }
                switch_services(run, &objects, &previous, &switch.settings).await?;
                scale_revision(run, &objects, &revision, 0).await?;
                run.note(&format!("routed back to revision {previous}"));
                return to_value(&RollbackOutputs {
                    revision: Some(revision),
                    restored: Some(previous),
                    ..RollbackOutputs::of(RolledBack::BlueGreen)
                });
            }
            let bg = outputs.blue_green.unwrap_or_default();
            if !bg.switched {
                scale_revision(run, &objects, &bg.revision, 0).await?;
                return to_value(&RollbackOutputs {
                    revision: Some(bg.revision),
                    ..RollbackOutputs::of(RolledBack::BlueGreen)
                });
            }
            rollback_revision(run, &env_name, &env).await
        }
        _ => rollback_revision(run, &env_name, &env).await,
    }
}

/// Re-applies the last good revision of every cluster of the environment.
async fn rollback_revision(run: &mut StageRun, env_name: &str, env: &EnvSnapshot) -> StageResult {
    let app = run.snapshot.app["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A rollback execution (`/bowline rollback`) restores what was live before the
    // execution it rolls back, and records it so drift detection compares with it.
    let before = run
        .snapshot
        .rollback_before
        .clone()
        .unwrap_or_else(|| run.execution.clone());
    let record = run.snapshot.rollback_before.is_some();
    // Nothing to roll back to anywhere (a first delivery): the stage is skipped with
    // that reason rather than failed. Only some clusters without one: the others are
    // rolled back, then the stage fails naming the rest.
    let mut goods = Vec::new();
    let mut missing = Vec::new();
    for cluster in clusters(env) {
        match run
            .engine
            .store
            .last_good(&app, env_name, &cluster.name, Some(&before))?
        {
            Some(good) => goods.push((cluster, good)),
            None => missing.push(cluster.name),
        }
    }
    let nothing = format!(
        "{}: no earlier successful revision to roll back to",
        missing.join(", ")
    );
    if goods.is_empty() && !missing.is_empty() {
        run.end_as(StageStatus::Skipped, nothing);
        return to_value(&RollbackOutputs::of(RolledBack::Nothing));
    }
    let mut restored = BTreeMap::new();
    for (cluster, good) in goods {
        restored.insert(cluster.name.clone(), good.revision.clone());
        run.note(&format!(
            "{}: re-applying revision {}",
            cluster.name, good.revision
        ));
        sync_env(run, &good.objects, false).await?;
        if record {
            run.engine.store.save_applied(&AppliedRevision {
                execution: run.execution.clone(),
                applied_at: Utc::now(),
                ..good.clone()
            })?;
        }
    }
    if !missing.is_empty() {
        // Another attempt would find no revision for them either.
        return Err(StageError::terminal(nothing));
    }
    to_value(&RollbackOutputs {
        revisions: Some(restored),
        ..RollbackOutputs::of(RolledBack::Revision)
    })
}

pub(super) async fn analysis(run: &mut StageRun, stage: CanaryAnalysisStage) -> StageResult {
    let mut config = run.snapshot.canary.clone().ok_or_else(|| {
        StageError::terminal("canaryAnalysis needs a canary config (spec.canary.config of the app)")
    })?;
    if let Some(lifetime) = stage.lifetime {
        config.spec.analysis.lifetime = lifetime;
    }
    if let Some(interval) = stage.interval {
        config.spec.analysis.interval = Some(interval);
    }
    let (_, env) = run.environment()?;
    let url = run
        .engine
        .services
        .prometheus_override
        .clone()
        .or_else(|| env.prometheus.clone())
        .ok_or_else(|| {
            StageError::terminal("the environment has no prometheus.url for canary analysis")
        })?;
    let namespace = env.namespace.clone();
    let app = run.snapshot.app["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let started = match run
        .state
        .outputs
        .get("analysisStart")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
    {
        Some(t) => t,
        None => {
            let t = Utc::now();
            run.checkpoint(json!({"analysisStart": t}))?;
            t
        }
    };
    // Kayenta's scope is the server group: here the Deployment of each track
    // (`<app>-baseline`, `<app>-canary`); the `track` label is there for `{{ label_filter }}`.
    let scope = |track: &str| Scope {
        scope: format!("{app}-{track}"),
        location: namespace.clone(),
        labels: [("track".to_string(), track.to_string())]
            .into_iter()
            .collect(),
    };
    let request = Request {
        plan: Plan::from_config(&config, started, None, None),
        baseline: scope("baseline"),
        canary: scope("canary"),
        config,
    };
    let source = PrometheusSource::new(&url, Duration::from_secs(30))
        .map_err(|e| StageError::terminal(e.to_string()))?;
    let analysis: Pin<Box<dyn Future<Output = analysis::AnalysisReport> + Send + '_>> =
        Box::pin(analysis::run(&source, &request));
    let report = analysis.await;
    let score = report.last_result().map(|r| r.score.score);
    let outputs = json!({
        "analysisStart": started,
        "status": report.status.as_str(),
        "reason": report.reason,
        "score": score,
        "report": report,
    });
    run.checkpoint(outputs.clone())?;
    match report.status {
        Status::Pass => Ok(outputs),
        // Verdicts: the same metrics would be judged the same way again.
        Status::Marginal => Err(StageError::terminal(format!(
            "canary marginal: {}",
            report.reason
        ))),
        Status::Fail => Err(StageError::terminal(format!(
            "canary fail: {}",
            report.reason
        ))),
        // No verdict (metrics could not be retrieved): another attempt may get them.
        Status::Error => Err(StageError::transient(format!(
            "canary error: {}",
            report.reason
        ))),
    }
}
