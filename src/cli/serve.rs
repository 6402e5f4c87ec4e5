//! `bowline serve`: the daemon with its HTTP server, poll loop, drift checks and graceful
//! shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use std::sync::Arc;

use bowline::daemon::replicas::{self, Coordinator, ReplicaConfig};
use bowline::daemon::{Daemon, DaemonConfig};
use bowline::diff::Masker;
use bowline::forge::{GitHub, RepoRef};
use bowline::pipeline::Services;
use bowline::server::{self, ApiTokens, LimitedListener, ServerLimits};
use bowline::source::Limits;
use bowline::source::git::{GitAuth, GitSource};

use super::live::ClusterArgs;
use super::pipeline::StateArgs;

/// The command-line options of `bowline serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Config repository: an https or ssh URL, or a local path.
    #[arg(long, env = "BOWLINE_REPO")]
    pub repo: String,
    /// Branch whose commits are deployed.
    #[arg(long, default_value = "main", env = "BOWLINE_BRANCH")]
    pub branch: String,
    /// Time between fetches (plus up to 10% jitter; doubled after each failure, at most 16×).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "BOWLINE_POLL_INTERVAL")]
    pub poll_interval: Duration,
    /// Time between drift checks; `0s` turns them off.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "BOWLINE_DRIFT_INTERVAL")]
    pub drift_interval: Duration,
    /// Address the HTTP server listens on (webhooks, API, health, metrics).
    #[arg(long, default_value = "127.0.0.1:8080", env = "BOWLINE_LISTEN")]
    pub listen: SocketAddr,
    /// Directory of the bare Git mirror of the config repository.
    #[arg(long, default_value = "bowline-cache", env = "BOWLINE_CACHE_DIR")]
    pub cache_dir: PathBuf,
    #[command(flatten)]
    pub clusters: ClusterArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// File holding the GitHub token (statuses, comments, permissions).
    #[arg(long, env = "BOWLINE_GITHUB_TOKEN_FILE")]
    pub github_token_file: Option<PathBuf>,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(
        long,
        default_value = "https://api.github.com",
        env = "BOWLINE_GITHUB_API"
    )]
    pub github_api: String,
    /// GitHub repository `owner/name` of the config repo (default: bowline.yaml's forge).
    #[arg(long, env = "BOWLINE_GITHUB_REPO")]
    pub github_repo: Option<String>,
    /// File holding the webhook secret; webhooks are refused without one.
    #[arg(long, env = "BOWLINE_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File of API bearer tokens, one `name:token[:read|operate[:app,…]]` per line; the API is
    /// off without one.
    #[arg(long, env = "BOWLINE_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// File holding a token for https Git remotes.
    #[arg(long, env = "BOWLINE_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// Private key for ssh Git remotes.
    #[arg(long, env = "BOWLINE_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// Public base URL of this server, for the links of commit statuses.
    #[arg(long, env = "BOWLINE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Development mode: watch this local working copy and fetch as soon as it changes.
    #[arg(long, env = "BOWLINE_WATCH")]
    pub watch: Option<PathBuf>,
    /// Directory of secret files for stage templates (`secrets.<file name>`).
    #[arg(long, env = "BOWLINE_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Prometheus URL for canary analysis instead of each environment's.
    #[arg(long, env = "BOWLINE_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// How often running stages look at the world (health, judgments, cancellation).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, env = "BOWLINE_STAGE_POLL")]
    pub stage_poll: Duration,
    /// Longest wait on shutdown for executions actively running stages and for running
    /// queue jobs before they are stopped; executions that only wait (a judgment, a window, a
    /// `wait` stage) stop at once. Stopped executions resume on the next start.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, env = "BOWLINE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
    /// Jobs of the daemon's work queue running at once, at most (reconciles, pull-request
    /// plans, ChatOps commands, drift checks); more wait their turn. One key (the branch, a
    /// pull request) never runs twice at once, and requests for a busy key coalesce.
    #[arg(long, alias = "max-concurrent-plans", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), env = "BOWLINE_MAX_CONCURRENT_WORK")]
    pub max_concurrent_work: u16,
    /// Let webhook stages and `http_ok` reach link-local and cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254), refused by default.
    #[arg(long, env = "BOWLINE_ALLOW_LINK_LOCAL_EGRESS")]
    pub allow_link_local_egress: bool,
    /// HTTP requests handled at once, at most, over the whole server; more are answered 503
    /// at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), env = "BOWLINE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: u32,
    /// HTTP connections open at once, at most; more wait in the listen backlog until one
    /// closes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), env = "BOWLINE_MAX_CONNECTIONS")]
    pub max_connections: u32,
    /// The longest time to receive a webhook body; a slower sender is answered 408.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "BOWLINE_WEBHOOK_BODY_TIMEOUT")]
    pub webhook_body_timeout: Duration,
    #[command(flatten)]
    pub replicas: ReplicaArgs,
}

/// How several replicas share the work (off unless `--lease-namespace` is given).
#[derive(clap::Args)]
pub struct ReplicaArgs {
    /// Run as one of several replicas on one PostgreSQL state, coordinated by Leases in this
    /// namespace: a leader follows the branch and sends statuses, apps are split into shards
    /// held by the replicas.
    #[arg(long, env = "BOWLINE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// kubeconfig context of the API server holding the Leases (default: the in-cluster
    /// service account, else the default kubeconfig).
    #[arg(long, env = "BOWLINE_LEASE_CONTEXT")]
    pub lease_context: Option<String>,
    /// Prefix of the Lease names; replicas of one deployment share it.
    #[arg(long, default_value = "bowline", env = "BOWLINE_LEASE_PREFIX")]
    pub lease_prefix: String,
    /// How long a Lease holds without renewal (renewed every third of it); a replica that
    /// dies is replaced within about this long.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, env = "BOWLINE_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// Shards the apps are split into; every replica must use the same number.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024), env = "BOWLINE_SHARDS")]
    pub shards: u32,
    /// This replica's identity in Leases and fences (default: host name, process id and a
    /// random part).
    #[arg(long, env = "BOWLINE_REPLICA_ID")]
    pub replica_id: Option<String>,
}

/// The coordination of several replicas, when asked for.
/// The Lease client is made on `leases`, the runtime the coordination runs on: its own thread,
/// so renewals never wait behind busy executions.
async fn replicas(
    args: &ServeArgs,
    leases: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<(ReplicaConfig, Arc<replicas::Holdings>)>> {
    let r = &args.replicas;
    let Some(namespace) = &r.lease_namespace else {
        return Ok(None);
    };
    anyhow::ensure!(
        args.state.is_shared(),
        "--lease-namespace needs a state every replica shares: --state postgres://…"
    );
    anyhow::ensure!(
        r.lease_duration >= Duration::from_secs(2),
        "--lease-duration {}: at least 2s",
        humantime::format_duration(r.lease_duration)
    );
    let options = bowline::cluster::ConnectOptions {
        context: None,
        ..super::live::connect_options(&args.clusters)
    };
    let context = r.lease_context.clone();
    let client = leases
        .spawn(async move {
            match context {
                Some(context) => bowline::cluster::Cluster::connect("leases", &context, &options)
                    .await
                    .map(|c| c.client().clone())
                    .with_context(|| format!("the Lease API (context {context})")),
                None => kube::Client::try_default()
                    .await
                    .context("the Lease API (in-cluster service account or default kubeconfig)"),
            }
        })
        .await
        .context("the Lease API")??;
    let holder = r
        .replica_id
        .clone()
        .unwrap_or_else(bowline::pipeline::owner_id);
    let config = ReplicaConfig {
        client,
        namespace: namespace.clone(),
        prefix: r.lease_prefix.clone(),
        shards: r.shards,
        lease_duration: r.lease_duration,
    };
    Ok(Some((
        config,
        Arc::new(replicas::Holdings::new(&holder, r.shards)),
    )))
}

fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{what} file {}", path.display()))?;
    let value = text.trim().to_string();
    anyhow::ensure!(!value.is_empty(), "{what} file {} is empty", path.display());
    Ok(value)
}

/// `bowline serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve_async(args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve_async(args: ServeArgs) -> anyhow::Result<()> {
    let store = args.state.open()?;
    let leases = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bowline-leases")
        .enable_all()
        .build()
        .context("starting the Lease runtime")?;
    let replicas = replicas(&args, &leases).await?;
    let connect = super::live::connect_options(&args.clusters);
    let mut services =
        Services::new(connect.clone()).with_link_local_egress(args.allow_link_local_egress);
    services.secrets = super::pipeline::secrets(args.secrets_dir.as_deref())?;
    services.prometheus_override = args.prometheus.clone();
    services.poll = args.stage_poll.max(Duration::from_millis(10));
    services.retry_delay = services.poll.max(Duration::from_millis(10)) * 2;
    let auth = GitAuth {
        token: args
            .git_token_file
            .as_deref()
            .map(|p| read_secret(p, "Git token"))
            .transpose()?,
        ssh_key: args.git_ssh_key.clone(),
    };
    let source = GitSource::open(&args.repo, &args.branch, &args.cache_dir, auth)?;
    let github = match &args.github_token_file {
        Some(path) => Some(GitHub::new(
            &args.github_api,
            read_secret(path, "GitHub token")?,
        )?),
        None => {
            tracing::warn!("no --github-token-file: no commit statuses or PR comments");
            None
        }
    };
    let webhook_secret = args
        .webhook_secret_file
        .as_deref()
        .map(|p| read_secret(p, "webhook secret").map(String::into_bytes))
        .transpose()?;
    let tokens = match &args.api_tokens_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("API tokens file {}", path.display()))?;
            ApiTokens::parse(&path.display().to_string(), &text)?
        }
        None => ApiTokens::default(),
    };
    let github_repo = match &args.github_repo {
        Some(full) => Some(
            RepoRef::parse(full)
                .with_context(|| format!("--github-repo {full:?}: expected owner/name"))?,
        ),
        None => None,
    };
    let config = DaemonConfig {
        poll_interval: args.poll_interval,
        drift_interval: (!args.drift_interval.is_zero()).then_some(args.drift_interval),
        github_repo,
        public_url: args.public_url.clone(),
        limits: Limits::default(),
        connect,
        masker: Masker::with_key(
            args.state
                .mask_key()
                .context("the secret-mask key kept with the state")?,
        ),
        max_concurrent_work: usize::from(args.max_concurrent_work),
        outbox: bowline::daemon::OutboxConfig::default(),
        replicas: replicas.as_ref().map(|(_, holdings)| holdings.clone()),
    };
    let daemon = Daemon::new(config, source, store, services, github, webhook_secret)?;
    let coordinator = replicas.map(|(config, holdings)| {
        tracing::info!(replica = %holdings.holder(), namespace = %config.namespace, shards = config.shards, "running as one of several replicas");
        Arc::new(Coordinator::new(config, holdings))
    });
    // One of several replicas resumes the executions of the shards it takes, when it takes them.
    let resumed = match coordinator {
        Some(_) => 0,
        None => daemon.resume()?,
    };
    let coordination = coordinator
        .clone()
        .map(|c| leases.spawn(c.run(Arc::downgrade(&daemon))));
    let _watcher = match &args.watch {
        Some(path) => Some(bowline::daemon::watch::watch(path, &daemon)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, branch = %args.branch, resumed, "bowline serving");
    if !bowline::telemetry::json() {
        eprintln!("bowline: serving on http://{}", listener.local_addr()?);
    }
    let poll = tokio::spawn(daemon.clone().poll_loop());
    let drift = tokio::spawn(daemon.clone().drift_loop());
    let limits = ServerLimits {
        max_concurrent_requests: usize::try_from(args.max_concurrent_requests).unwrap_or(256),
        body_timeout: args.webhook_body_timeout.max(Duration::from_millis(100)),
        ..ServerLimits::default()
    };
    let listener = LimitedListener::new(
        listener,
        usize::try_from(args.max_connections).unwrap_or(1024),
    );
    axum::serve(
        listener,
        server::router_with(daemon.clone(), tokens, limits)
            .into_make_service_with_connect_info::<server::ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("HTTP server")?;
    poll.abort();
    drift.abort();
    let stopped = daemon.shutdown(args.shutdown_grace).await;
    if let Some(coordinator) = coordinator {
        // After the executions stopped: the next holders resume them at once.
        let _ = leases
            .spawn(async move { coordinator.release_all().await })
            .await;
    }
    if let Some(task) = coordination {
        task.abort();
    }
    // Dropping a runtime inside another would block it.
    leases.shutdown_background();
    tracing::info!(stopped, "bowline stopped");
    if !bowline::telemetry::json() {
        eprintln!("bowline: stopped ({stopped} execution(s) left to resume)");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!(
        "shutting down: no new requests; letting running stages reach a committed state"
    );
}
