//! `plan` with the live diff and `sync`: the commands that talk to clusters.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use bowline::cluster::{Cluster, ConnectOptions, Health};
use bowline::config::Application;
use bowline::destination::Destinations;
use bowline::diagnostic;
use bowline::diff::{Action, DiffOptions, Masker};
use bowline::plan::{self, LiveDiff};
use bowline::sync::{self, AppTarget, SyncEvent, SyncOptions};

use super::OutputFormat;
use super::repo::{RepoArgs, check_selection, load};

/// How to reach the clusters named in bowline.yaml.
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account).
    #[arg(long, env = "BOWLINE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Use this kubeconfig context for every cluster instead of the contexts in bowline.yaml.
    #[arg(long)]
    pub context: Option<String>,
    /// Timeout of each request to an API server.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

/// The connection options the flags ask for.
pub fn connect_options(args: &ClusterArgs) -> ConnectOptions {
    ConnectOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        timeout: args.request_timeout,
        ..ConnectOptions::default()
    }
}

/// The Secret masker of one command-line run: keyed by a fresh random key, so masked values
/// compare within the run and mean nothing outside it.
pub fn masker() -> Masker {
    Masker::default()
}

fn diff_options(app: &Application) -> DiffOptions {
    sync::diff_options_for(app, &masker())
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `bowline plan`: validity, stages and the live diff per app, environment and cluster.
pub fn plan(
    repo: RepoArgs,
    clusters: ClusterArgs,
    format: OutputFormat,
    exit_code: bool,
    app: Option<String>,
    env: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (app, env) = (app.as_deref(), env.as_deref());
    let loaded = load(&repo, app, env)?;
    super::repo::check_selection(&loaded.repo, app, env)?;
    let mut table = plan::build_with_policy(
        &loaded.repo,
        &loaded.diagnostics,
        &loaded.rendered,
        &loaded.policy,
    );
    // Errors anywhere in the repository still count, as for `render --app`.
    table
        .rows
        .retain(|r| app.is_none_or(|a| r.app == a) && env.is_none_or(|e| r.environment == e));
    let options = connect_options(&clusters);
    let kubeconfig = options.configured();
    let targets = sync::render_targets(&loaded.repo, app, env);
    let pool = bowline::cluster::ClusterPool::new(options);
    let planned = runtime()?.block_on(sync::plan_targets(
        &targets,
        &pool,
        kubeconfig.is_some(),
        &masker(),
        &super::pipeline::git_head(&repo.repo).unwrap_or_default(),
        Some(&loaded.declarations),
    ));
    let live = LiveDiff::new(planned, kubeconfig.as_deref());

    let mut stdout = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            let report = serde_json::json!({
                "comparedWith": live.compared_with,
                "inSync": live.in_sync(),
                "totals": live.totals,
                "errors": table.errors,
                "warnings": table.warnings,
                "diagnostics": loaded.diagnostics,
                "policy": loaded.policy,
                "rows": table.rows,
                "targets": live.targets,
            });
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        }
        OutputFormat::Text => {
            writeln!(stdout, "{}", live.compared_with)?;
            writeln!(stdout)?;
            for d in &loaded.diagnostics {
                writeln!(stdout, "{d}")?;
            }
            for e in &loaded.policy.exceptions {
                writeln!(stdout, "{e}")?;
            }
            if !loaded.diagnostics.is_empty() || !loaded.policy.exceptions.is_empty() {
                writeln!(stdout)?;
            }
            write!(stdout, "{}", plan::to_table(&table))?;
            writeln!(stdout)?;
            write!(stdout, "{}", plan::diff_text(&live))?;
        }
    }
    let code =
        if table.errors > 0 || (exit_code && live.has_offline_targets() && kubeconfig.is_some()) {
            1
        } else if exit_code && !live.in_sync() {
            2
        } else {
            0
        };
    Ok(ExitCode::from(code))
}

/// `bowline sync`: apply one app to one environment, cluster by cluster in wave order, and
/// wait for it to be healthy.
#[allow(clippy::too_many_arguments)]
pub fn sync(
    repo: RepoArgs,
    clusters: ClusterArgs,
    app: String,
    env: String,
    dry_run: bool,
    prune: bool,
    timeout: Duration,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = load(&repo, Some(&app), Some(&env))?;
    check_selection(&loaded.repo, Some(&app), Some(&env))?;
    let mut stdout = std::io::stdout().lock();
    let errors = diagnostic::error_count(&loaded.diagnostics);
    for d in &loaded.diagnostics {
        writeln!(stdout, "{d}")?;
    }
    if errors > 0 {
        writeln!(
            stdout,
            "sync refused: {} in the config repository",
            diagnostic::count(errors, "error")
        )?;
        return Ok(ExitCode::from(1));
    }
    let Some(target) = sync::render_targets(&loaded.repo, Some(&app), Some(&env))
        .into_iter()
        .next()
    else {
        anyhow::bail!("application \"{app}\" is not deployed to environment \"{env}\"");
    };
    let options = connect_options(&clusters);
    let diff = diff_options(target.app);
    let policy = target.policy;
    let sync_options = SyncOptions {
        dry_run,
        wait: !no_wait,
        timeout,
        create_namespace: policy.create_namespace,
        ..SyncOptions::default()
    };
    let namespace = target.app.namespace_in(target.environment);
    let destinations = Destinations::of(target.environment);
    let revision = super::pipeline::git_head(&repo.repo).unwrap_or_default();
    let verb = if dry_run { "dry-run sync" } else { "sync" };
    let rt = runtime()?;
    for (wave, clusters_in_wave) in target.environment.waves() {
        for cluster in clusters_in_wave {
            writeln!(
                stdout,
                "{verb} {app} to {env}: cluster {} (wave {wave})",
                cluster.name
            )?;
            stdout.flush()?;
            let result = rt.block_on(async {
                let connected = Cluster::connect(&cluster.name, &cluster.context, &options).await?;
                // The strategy's state (blue/green revisions and selectors), as plan shows it.
                let objects = sync::desired_objects(&target, Some(&connected), &revision).await;
                let app_target = AppTarget {
                    app: &app,
                    environment: &env,
                    cluster: &cluster.name,
                    namespace: &namespace,
                    destinations: &destinations,
                    objects: &objects,
                    prune: prune || policy.prune,
                    force_conflicts: policy.force_conflicts,
                    context: &cluster.context,
                    declarations: Some(&loaded.declarations),
                };
                sync::sync(&connected, &app_target, &diff, &sync_options, &print_event).await
            });
            match result {
                Ok(report) => {
                    let c = report.plan.counts;
                    writeln!(
                        stdout,
                        "{} {app} to {env} on {}: {} created, {} updated, {} pruned, {} unchanged{} ({:.1}s)",
                        if dry_run { "would sync" } else { "synced" },
                        cluster.name,
                        c.create,
                        c.update,
                        c.delete,
                        c.unchanged,
                        if report.healthy && !dry_run {
                            "; healthy"
                        } else {
                            ""
                        },
                        report.elapsed.as_secs_f64()
                    )?;
                }
                Err(e) => {
                    writeln!(stdout, "{verb} failed: {e}")?;
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: SyncEvent) {
    let line = match event {
        SyncEvent::Applied(d) => {
            let what = match d.action {
                Action::Create => "created".to_string(),
                Action::Update => format!("updated: {}", d.changed.join(", ")),
                Action::Delete => "deleted".to_string(),
                Action::Unchanged => "unchanged".to_string(),
                Action::Refuse => "refused: not managed by this app".to_string(),
            };
            format!("  {} {} {what}", d.action.sign(), d.key)
        }
        SyncEvent::Pruned(key) => format!("  - {key} pruned"),
        SyncEvent::Waiting(keys) => format!(
            "  waiting for {} to become healthy",
            diagnostic::count(keys.len(), "workload")
        ),
        SyncEvent::Health(key, health) => match health {
            Health::Healthy => format!("  {key}: healthy"),
            other => format!("  {key}: {other}"),
        },
    };
    let mut stdout = std::io::stdout().lock();
    // Progress output is best effort: a closed stdout must not abort the sync itself.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
