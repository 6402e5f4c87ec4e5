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
use crate::canary::analysis::{self, Plan, Request, Status};
use crate::canary::retrieval::{PrometheusSource, Scope};
use crate::cluster::{Cluster, health};
use crate::config::{CanaryAnalysisStage, DeployStage, IntOrPercent, Strategy};
use crate::desired::{self, is_deployment, is_preview, is_service};
use crate::diff::{DiffOptions, ObjectKey};
use crate::pipeline::StageResult;
use crate::pipeline::snapshot::EnvSnapshot;
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
) -> Result<std::sync::Arc<Cluster>, String> {
    run.engine
        .services
        .clusters
        .get(&cluster.name, &cluster.context)
        .await
        .map_err(|e| e.to_string())
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
async fn sync_env(run: &mut StageRun, objects: &[Value], record: bool) -> Result<(), String> {
    sync_env_in(run, objects, record, false).await
}

/// [`sync_env`], the clusters in reverse wave order when `reverse` (a removal undoes the
/// rollout in the opposite order).
async fn sync_env_in(
    run: &mut StageRun,
    objects: &[Value],
    record: bool,
    reverse: bool,
) -> Result<(), String> {
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
        };
        let options = SyncOptions {
            timeout,
            poll: run.engine.services.poll,
            create_namespace: run.snapshot.create_namespace,
            ..SyncOptions::default()
        };
        // Refused before connecting: nothing outside the destinations reaches a cluster.
        sync::check_destinations(&target).map_err(|e| e.to_string())?;
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
        let report = sync::sync(&connected, &target, &diff, &options, &progress)
            .await
            .map_err(|e| e.to_string())?;
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
            run.engine
                .store
                .save_applied(&AppliedRevision {
                    app: app.clone(),
                    environment: env_name.clone(),
                    cluster: cluster.name.clone(),
                    revision: run.revision.clone(),
                    objects: objects.to_vec(),
                    execution: run.execution.clone(),
                    applied_at: Utc::now(),
                })
                .map_err(|e| e.to_string())?;
        }
        let mut done = run
            .state
            .outputs
            .get("clusters")
            .cloned()
            .unwrap_or(json!({}));
        done[cluster.name.as_str()] = json!("healthy");
        run.checkpoint(json!({"clusters": done}))?;
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
        return Err("removal needs prune (the app's syncPolicy.prune)".into());
    }
    sync_env_in(run, &[], true, true).await?;
    Ok(run.state.outputs.clone())
}

pub(super) async fn deploy(run: &mut StageRun, stage: DeployStage) -> StageResult {
    let (_, env) = run.environment()?;
    let objects = env.objects.clone();
    run.checkpoint(json!({"strategy": stage.strategy.as_str()}))?;
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
            let production = connected.get(&key).await.map_err(|e| e.to_string())?.ok_or_else(|| {
                format!(
                    "{}: canary needs a running production version of {key} to compare with; deploy it first (rolling)",
                    cluster.name
                )
            })?;
            workloads.extend(desired::canary_tracks(d, &production, &settings));
        }
        // Recorded before they are applied, so that whatever ends the execution removes them.
        created.extend(
            workloads
                .iter()
                .map(|w| json!({"cluster": cluster.name, "key": ObjectKey::of(w)})),
        );
        run.checkpoint(json!({"canaryWorkloads": created}))?;
        // Resumed after a restart, a cluster already applied is only waited for.
        if !applied_in(run, &cluster.name, &json!(true)) {
            for w in &workloads {
                connected
                    .apply(w, false, run.snapshot.force_conflicts)
                    .await
                    .map_err(|e| e.to_string())?;
                run.note(&format!("{}: applied {}", cluster.name, ObjectKey::of(w)));
            }
            mark_applied(run, &cluster.name, json!(true))?;
        }
        wait_healthy(run, &connected, &workloads).await?;
    }
    Ok(run.state.outputs.clone())
}

async fn wait_healthy(
    run: &StageRun,
    cluster: &Cluster,
    workloads: &[Value],
) -> Result<(), String> {
    let deadline = run.remaining().map(|r| tokio::time::Instant::now() + r);
    for w in workloads {
        let key = ObjectKey::of(w);
        loop {
            match cluster.health(&key).await.map_err(|e| e.to_string())? {
                health::Health::Healthy => break,
                health::Health::Failed(reason) => {
                    return Err(format!("rollout of {key} failed: {reason}"));
                }
                health::Health::Progressing(m) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Err(format!("timed out waiting for {key}: {m}"));
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
        if !applied_in(run, &cluster.name, &json!(revision)) {
            ensure_namespace(run, &connected, &env.namespace).await?;
            for o in others.iter().chain(&versioned) {
                connected
                    .apply(o, false, run.snapshot.force_conflicts)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            mark_applied(run, &cluster.name, json!(revision))?;
        }
        wait_healthy(run, &connected, &versioned).await?;
        run.note(&format!("{}: revision {revision} is healthy", cluster.name));
    }
    let delay = settings
        .scale_down_delay
        .map(|d| d.0.as_secs())
        .unwrap_or(30);
    if run.state.outputs["blueGreen"]["revision"] != json!(revision) {
        run.checkpoint(
            json!({"blueGreen": {"revision": revision, "switched": false,
            "scaleDownDelay": delay, "settings": settings}}),
        )?;
    }
    if settings.auto_promote {
        if run.state.outputs["blueGreen"]["switched"] != json!(true) {
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
fn applied_in(run: &StageRun, cluster: &str, what: &Value) -> bool {
    run.state.outputs["applied"][cluster] == *what
}

/// Checkpoints that `what` was applied to `cluster`.
fn mark_applied(run: &mut StageRun, cluster: &str, what: Value) -> Result<(), String> {
    let mut done = run
        .state
        .outputs
        .get("applied")
        .cloned()
        .unwrap_or(json!({}));
    done[cluster] = what;
    run.checkpoint(json!({"applied": done}))
}

/// Creates the app's namespace in `cluster` when it is missing (or fails naming it when
/// `syncPolicy.createNamespace` is false), as a sync does before applying.
async fn ensure_namespace(
    run: &StageRun,
    cluster: &Cluster,
    namespace: &str,
) -> Result<(), String> {
    let (env_name, _) = run.environment()?;
    let app = run.snapshot.app["name"].as_str().unwrap_or_default();
    let created = sync::ensure_namespace(
        cluster,
        namespace,
        app,
        env_name,
        run.snapshot.create_namespace,
    )
    .await
    .map_err(|e| e.to_string())?;
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
) -> Result<(), String> {
    let (_, env) = run.environment()?;
    let env = env.clone();
    let mut previous: Option<String> = None;
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        for service in objects
            .iter()
            .filter(|o| is_service(o) && !is_preview(o, settings))
        {
            if let Some(live) = connected
                .get(&ObjectKey::of(service))
                .await
                .map_err(|e| e.to_string())?
            {
                previous = previous.or_else(|| {
                    live["spec"]["selector"][REVISION_LABEL]
                        .as_str()
                        .map(str::to_string)
                });
            }
            let s = desired::selecting(service, revision);
            connected
                .apply(&s, false, run.snapshot.force_conflicts)
                .await
                .map_err(|e| e.to_string())?;
            run.note(&format!(
                "{}: {} now routes to revision {revision}",
                cluster.name,
                ObjectKey::of(&s)
            ));
        }
    }
    let mut bg = run
        .state
        .outputs
        .get("blueGreen")
        .cloned()
        .unwrap_or(json!({}));
    bg["switched"] = json!(true);
    bg["previous"] = json!(previous);
    bg["switchedAt"] = json!(Utc::now());
    run.checkpoint(json!({"blueGreen": bg}))
}

/// The deploy stage of this stage's environment in the same execution, with its outputs.
fn deploy_stage_of(run: &StageRun) -> Result<Option<(String, Value)>, String> {
    let env = run.stage.environment.clone();
    let states = run
        .engine
        .store
        .stages(&run.execution)
        .map_err(|e| e.to_string())?;
    Ok(states
        .into_iter()
        .filter(|s| {
            s.stage_type == "deploy" && s.environment == env && s.status == StageStatus::Succeeded
        })
        .map(|s| {
            let strategy = s.outputs["strategy"]
                .as_str()
                .unwrap_or("rolling")
                .to_string();
            (strategy, s.outputs)
        })
        .next_back())
}

/// The canary tracks recorded in a deploy stage's `outputs`, per cluster.
fn canary_tracks_of(outputs: &Value, cluster: &str) -> Vec<ObjectKey> {
    outputs["canaryWorkloads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["cluster"] == cluster)
        .filter_map(|i| serde_json::from_value(i["key"].clone()).ok())
        .collect()
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
    for state in states.iter().filter(|s| s.stage_type == "deploy") {
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
        for cluster in clusters(env).into_iter().rev() {
            let tracks = canary_tracks_of(&state.outputs, &cluster.name);
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

async fn delete_canary_workloads(run: &mut StageRun, outputs: &Value) -> Result<(), String> {
    let (_, env) = run.environment()?;
    let env = env.clone();
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        for key in canary_tracks_of(outputs, &cluster.name) {
            connected
                .delete(&key, false)
                .await
                .map_err(|e| e.to_string())?;
            run.note(&format!("{}: removed {key}", cluster.name));
        }
    }
    Ok(())
}

pub(super) async fn promote(run: &mut StageRun) -> StageResult {
    let Some((strategy, outputs)) = deploy_stage_of(run)? else {
        return Err("nothing to promote: no successful deploy stage for this environment".into());
    };
    let (_, env) = run.environment()?;
    let objects = env.objects.clone();
    match strategy.as_str() {
        "canary" => {
            if run.state.outputs.get("production") != Some(&json!("healthy")) {
                sync_env(run, &objects, true).await?;
                run.checkpoint(json!({"production": "healthy"}))?;
            }
            delete_canary_workloads(run, &outputs).await?;
            Ok(json!({"promoted": "canary", "production": "healthy"}))
        }
        "blueGreen" => {
            let revision = outputs["blueGreen"]["revision"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let settings: crate::config::BlueGreenSettings =
                serde_json::from_value(outputs["blueGreen"]["settings"].clone())
                    .unwrap_or_default();
            if !outputs["blueGreen"]["switched"].as_bool().unwrap_or(false)
                && run.state.outputs.get("switched").is_none()
            {
                run.state.outputs = merged_outputs(&run.state.outputs, &outputs);
                switch_services(run, &objects, &revision, &settings).await?;
                run.checkpoint(json!({"switched": true}))?;
            }
            let delay = Duration::from_secs(
                outputs["blueGreen"]["scaleDownDelay"]
                    .as_u64()
                    .unwrap_or(30),
            );
            scale_down_previous(run, &objects, &revision, delay).await?;
            // What drift and self-heal compare with: the switched blue/green state, never the
            // plain render (which would route the Services to every revision).
            record_applied(
                run,
                &desired::blue_green(&objects, &revision, Some(&revision), &settings),
            )?;
            // The switch is part of this stage's result, so that a later rollback stage
            // can route back.
            let mut switched = run.state.outputs["blueGreen"].clone();
            switched["switched"] = json!(true);
            Ok(json!({"promoted": "blueGreen", "revision": revision, "blueGreen": switched}))
        }
        _ => {
            run.note("rolling deploys are live once healthy: nothing to promote");
            Ok(json!({"promoted": "rolling"}))
        }
    }
}

fn merged_outputs(current: &Value, deploy: &Value) -> Value {
    crate::pipeline::merged(current, json!({"blueGreen": deploy["blueGreen"]}))
}

fn record_applied(run: &StageRun, objects: &[Value]) -> Result<(), String> {
    let (env_name, env) = run.environment()?;
    for cluster in &env.clusters {
        run.engine
            .store
            .save_applied(&AppliedRevision {
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
            })
            .map_err(|e| e.to_string())?;
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
) -> Result<(), String> {
    let previous = run.state.outputs["blueGreen"]["previous"]
        .as_str()
        .map(str::to_string);
    let Some(previous) = previous.filter(|p| *p != revision) else {
        return Ok(());
    };
    if run.state.outputs.get("previousScaledDown") == Some(&json!(true)) {
        return Ok(());
    }
    run.note(&format!(
        "keeping revision {previous} for {}s for an instant rollback",
        delay.as_secs()
    ));
    tokio::time::sleep(delay).await;
    scale_revision(run, objects, &previous, 0).await?;
    run.checkpoint(json!({"previousScaledDown": true}))
}

/// The blue/green switch of this stage's environment in the same execution, if one
/// happened: (new revision, previous revision, settings), from the deploy stage
/// (`autoPromote`) or the promote stage.
fn blue_green_switch(run: &StageRun) -> Result<Option<(String, Option<String>, Value)>, String> {
    let states = run
        .engine
        .store
        .stages(&run.execution)
        .map_err(|e| e.to_string())?;
    Ok(states
        .into_iter()
        .filter(|s| s.environment == run.stage.environment)
        .filter(|s| matches!(s.stage_type.as_str(), "deploy" | "promote"))
        .map(|s| s.outputs["blueGreen"].clone())
        .rfind(|bg| bg["switched"] == json!(true))
        .map(|bg| {
            (
                bg["revision"].as_str().unwrap_or_default().to_string(),
                bg["previous"].as_str().map(str::to_string),
                bg["settings"].clone(),
            )
        }))
}

async fn scale_revision(
    run: &mut StageRun,
    objects: &[Value],
    revision: &str,
    replicas: i64,
) -> Result<(), String> {
    let (_, env) = run.environment()?;
    let env = env.clone();
    for cluster in clusters(&env) {
        let connected = connect(run, &cluster).await?;
        for d in objects.iter().filter(|o| is_deployment(o)) {
            let mut key = ObjectKey::of(d);
            key.name = format!("{}-{revision}", key.name);
            if let Some(mut live) = connected.get(&key).await.map_err(|e| e.to_string())? {
                crate::diff::normalize(&mut live);
                live["spec"]["replicas"] = json!(replicas);
                connected
                    .apply(&live, false, true)
                    .await
                    .map_err(|e| e.to_string())?;
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
    match deploy {
        Some((strategy, outputs)) if strategy == "canary" => {
            delete_canary_workloads(run, &outputs).await?;
            run.note("production was not changed by the canary");
            Ok(json!({"rolledBack": "canary"}))
        }
        Some((strategy, _)) if strategy == "blueGreen" && blue_green_switch(run)?.is_some() => {
            // Instant rollback: route back to the previous revision (scaled up again if its
            // keep-alive window had passed), then scale the new one down.
            let Some((revision, previous, settings)) = blue_green_switch(run)? else {
                return Err("blue/green switch disappeared".into());
            };
            let previous = previous.ok_or_else(|| {
                format!(
                    "revision {revision} was the first one: no previous revision to route back to"
                )
            })?;
            let settings: crate::config::BlueGreenSettings =
                serde_json::from_value(settings).unwrap_or_default();
            for d in objects.iter().filter(|o| is_deployment(o)) {
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                scale_revision(run, std::slice::from_ref(d), &previous, replicas).await?;
            }
            switch_services(run, &objects, &previous, &settings).await?;
            scale_revision(run, &objects, &revision, 0).await?;
            run.note(&format!("routed back to revision {previous}"));
            Ok(json!({"rolledBack": "blueGreen", "revision": revision, "restored": previous}))
        }
        Some((strategy, outputs))
            if strategy == "blueGreen" && outputs["blueGreen"]["switched"] != json!(true) =>
        {
            let revision = outputs["blueGreen"]["revision"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            scale_revision(run, &objects, &revision, 0).await?;
            Ok(json!({"rolledBack": "blueGreen", "revision": revision}))
        }
        _ => {
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
            for cluster in clusters(&env) {
                match run
                    .engine
                    .store
                    .last_good(&app, &env_name, &cluster.name, Some(&before))
                    .map_err(|e| e.to_string())?
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
                return Ok(json!({"rolledBack": "nothing"}));
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
                    run.engine
                        .store
                        .save_applied(&AppliedRevision {
                            execution: run.execution.clone(),
                            applied_at: Utc::now(),
                            ..good.clone()
                        })
                        .map_err(|e| e.to_string())?;
                }
            }
            if !missing.is_empty() {
                return Err(nothing);
            }
            Ok(json!({"rolledBack": "revision", "revisions": restored}))
        }
    }
}

pub(super) async fn analysis(run: &mut StageRun, stage: CanaryAnalysisStage) -> StageResult {
    let mut config = run
        .snapshot
        .canary
        .clone()
        .ok_or("canaryAnalysis needs a canary config (spec.canary.config of the app)")?;
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
        .ok_or("the environment has no prometheus.url for canary analysis")?;
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
    let source = PrometheusSource::new(&url, Duration::from_secs(30)).map_err(|e| e.to_string())?;
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
        Status::Marginal => Err(format!("canary marginal: {}", report.reason)),
        Status::Fail | Status::Error => Err(format!(
            "canary {}: {}",
            report.status.as_str().to_ascii_lowercase(),
            report.reason
        )),
    }
}
