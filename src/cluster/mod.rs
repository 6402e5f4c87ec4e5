//! Everything that talks to Kubernetes, through `kube`: connecting per environment cluster
//! (kubeconfig context, or in-cluster config inside a pod), discovery-driven dynamic objects so
//! any kind works (CRDs included), server-side apply with field manager `bowline` (and its
//! dry-run, for diffs), pruning, rollout health, timeouts and retries.
//!
//! This module knows nothing about pipelines or the config repository: it applies, reads and
//! deletes JSON objects.

pub mod health;
pub mod lease;
pub mod pool;
pub mod prune;
pub mod retry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope, verbs};
use kube::{Client, Config, Discovery};
use serde_json::Value;
use tracing::Instrument;

use crate::object::ObjectKey;
pub use health::Health;
pub use pool::ClusterPool;
pub use retry::RetryPolicy;

/// How long a kind found by discovery is trusted before it is asked for again (a CRD's served
/// versions can change).
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// bowline's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "bowline";

/// Why talking to a cluster failed. Every message names the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read or has no usable entry for the context.
    #[error("cluster {cluster}: kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Cluster name from bowline.yaml.
        cluster: String,
        /// The kubeconfig file (or where it was looked for).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The API server did not answer.
    #[error("cluster {cluster} (context {context}) is unreachable at {url}: {message}")]
    Unreachable {
        /// Cluster name.
        cluster: String,
        /// kubeconfig context.
        context: String,
        /// API server URL.
        url: String,
        /// The connection error.
        message: String,
    },
    /// The cluster does not serve this apiVersion/kind.
    #[error("cluster {cluster}: the API server does not serve kind {kind} in {api_version}{hint}")]
    UnknownKind {
        /// Cluster name.
        cluster: String,
        /// `apiVersion` asked for.
        api_version: String,
        /// `kind` asked for.
        kind: String,
        /// A hint (e.g. install the CRD).
        hint: String,
    },
    /// The API server refused or failed a request.
    #[error("cluster {cluster}: {verb} {object}: {message}")]
    Api {
        /// Cluster name.
        cluster: String,
        /// What was attempted (`apply`, `get`, …).
        verb: &'static str,
        /// The object concerned.
        object: String,
        /// HTTP status code, when the server answered.
        code: Option<u16>,
        /// The server's message, or the transport error.
        message: String,
    },
}

impl ClusterError {
    /// True when the same request may succeed later: the API server did not answer, or
    /// answered 5xx, 429 (throttled) or 408 (request timeout). A 4xx answer (validation,
    /// forbidden, not found, a field-manager conflict), an unknown kind or a broken
    /// kubeconfig fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Api { code, .. } => match code {
                None => true,
                Some(code) => *code >= 500 || *code == 429 || *code == 408,
            },
            ClusterError::UnknownKind { .. } | ClusterError::Kubeconfig { .. } => false,
        }
    }

    /// The API server's own message (for a conflict: the managers and fields), or this
    /// error's text when the server did not answer.
    pub fn server_message(&self) -> String {
        match self {
            ClusterError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when the API server answered with a field-manager conflict (409 on apply).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            ClusterError::Api {
                code: Some(409),
                ..
            }
        )
    }
}

/// How to reach clusters.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// kubeconfig file; default `$KUBECONFIG` or `~/.kube/config`, then in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// Use this context for every cluster instead of the one named in bowline.yaml.
    pub context: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            kubeconfig: None,
            context: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

impl ConnectOptions {
    /// The kubeconfig that would be used, or `None` when there is none (no flag, no
    /// `$KUBECONFIG`, no `~/.kube/config`) and no in-cluster service account either.
    pub fn configured(&self) -> Option<String> {
        if let Some(path) = &self.kubeconfig {
            return Some(path.display().to_string());
        }
        if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path).display().to_string());
        }
        if let Some(path) = default_kubeconfig().filter(|p| p.exists()) {
            return Some(path.display().to_string());
        }
        in_cluster().then(|| "in-cluster service account".to_string())
    }
}

fn default_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube").join("config"))
}

fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Why one apply attempt failed: the resource type is gone (retried after discovery), or
/// anything else.
enum ApplyError {
    ResourceGone(ObjectKey),
    Failed(ClusterError),
}

use ApplyError::ResourceGone;

impl From<ClusterError> for ApplyError {
    fn from(e: ClusterError) -> ApplyError {
        ApplyError::Failed(e)
    }
}

/// A resolved kind: where its objects live in the API.
#[derive(Debug, Clone)]
struct Resolved {
    resource: ApiResource,
    namespaced: bool,
}

/// A connection to one cluster.
pub struct Cluster {
    name: String,
    context: String,
    url: String,
    client: Client,
    retry: RetryPolicy,
    kinds: Mutex<ResolvedKinds>,
    /// Every listable resource (for pruning), from a full discovery, with when it was read.
    listable: Mutex<Option<(ListableResources, std::time::Instant)>>,
}

/// Kinds resolved by discovery, by (apiVersion, kind), with when.
type ResolvedKinds = HashMap<(String, String), (Resolved, std::time::Instant)>;

/// The resources a full discovery found listable, with their capabilities.
type ListableResources = std::sync::Arc<Vec<(ApiResource, ApiCapabilities)>>;

impl Cluster {
    /// Connects to cluster `name` through kubeconfig `context` (or the override in `options`)
    /// and checks that its API server answers.
    // The cluster is a field of its own: a span field called `name` would clash with the
    // span's name in JSON logs.
    #[tracing::instrument(level = "info", skip(name, options), fields(cluster = name, context))]
    pub async fn connect(
        name: &str,
        context: &str,
        options: &ConnectOptions,
    ) -> Result<Cluster, ClusterError> {
        let context = options.context.as_deref().unwrap_or(context).to_string();
        tracing::Span::current().record("context", context.as_str());
        let kubeconfig_error = |path: &str, message: String| ClusterError::Kubeconfig {
            cluster: name.to_string(),
            path: path.to_string(),
            message,
        };
        let explicit = options
            .kubeconfig
            .clone()
            .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty());
        let file = explicit.or_else(|| default_kubeconfig().filter(|p| p.exists()));
        let mut config = match &file {
            Some(path) => {
                let shown = path.display().to_string();
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| kubeconfig_error(&shown, e.to_string()))?;
                if !kubeconfig.contexts.iter().any(|c| c.name == context) {
                    let known: Vec<&str> = kubeconfig
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    return Err(kubeconfig_error(
                        &shown,
                        format!(
                            "no context named \"{context}\" (contexts: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                let selected = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                Config::from_custom_kubeconfig(kubeconfig, &selected)
                    .await
                    .map_err(|e| kubeconfig_error(&shown, e.to_string()))?
            }
            None if in_cluster() => Config::incluster()
                .map_err(|e| kubeconfig_error("in-cluster service account", e.to_string()))?,
            None => {
                return Err(kubeconfig_error(
                    "~/.kube/config",
                    "no kubeconfig found (pass --kubeconfig or set KUBECONFIG)".to_string(),
                ));
            }
        };
        config.connect_timeout = Some(Duration::from_secs(5).min(options.timeout));
        config.read_timeout = Some(options.timeout);
        config.write_timeout = Some(options.timeout);
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| ClusterError::Unreachable {
            cluster: name.to_string(),
            context: context.clone(),
            url: url.clone(),
            message: e.to_string(),
        })?;
        let cluster = Cluster {
            name: name.to_string(),
            context,
            url,
            client,
            retry: options.retry,
            kinds: Mutex::new(HashMap::new()),
            listable: Mutex::new(None),
        };
        let version = retry::with_retries(cluster.retry, "GET /version", || {
            cluster.client.apiserver_version()
        })
        .await
        .map_err(|e| ClusterError::Unreachable {
            cluster: cluster.name.clone(),
            context: cluster.context.clone(),
            url: cluster.url.clone(),
            message: error_text(&e),
        })?;
        tracing::info!(cluster = %cluster.name, version = %version.git_version, "connected");
        Ok(cluster)
    }

    /// The client connected to the cluster (for Leases and other direct calls).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Cluster name from bowline.yaml.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kubeconfig context in use.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Where a kind lives in the API, from discovery (cached per cluster for
    /// [`DISCOVERY_TTL`]; a kind that is not found is asked for again next time, so CRDs applied
    /// meanwhile are picked up, and [`Cluster::forget_kind`] drops one the server stopped
    /// serving).
    async fn resolve(&self, api_version: &str, kind: &str) -> Result<Resolved, ClusterError> {
        let cache_key = (api_version.to_string(), kind.to_string());
        if let Some((found, since)) = self.lock_kinds().get(&cache_key)
            && since.elapsed() < DISCOVERY_TTL
        {
            return Ok(found.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = retry::with_retries(self.retry, "discovery", || {
            kube::discovery::pinned_kind(&self.client, &gvk)
        })
        .instrument(tracing::debug_span!("discover", %api_version, %kind))
        .await;
        match found {
            Ok((resource, capabilities)) => {
                // A kind the full listing used for pruning lacks is new to the cluster (a CRD
                // just applied): the listing is read again next time.
                let mut listable = self.lock_listable();
                if listable.as_ref().is_some_and(|(known, _)| {
                    !known.iter().any(|(r, _)| {
                        r.api_version == resource.api_version && r.kind == resource.kind
                    })
                }) {
                    listable.take();
                }
                drop(listable);
                let resolved = Resolved {
                    resource,
                    namespaced: capabilities.scope == Scope::Namespaced,
                };
                self.lock_kinds()
                    .insert(cache_key, (resolved.clone(), std::time::Instant::now()));
                Ok(resolved)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(self.unknown_kind(api_version, kind))
            }
            Err(kube::Error::Discovery(_)) => Err(self.unknown_kind(api_version, kind)),
            Err(e) => Err(self.api_error("discover", &format!("{api_version} {kind}"), &e)),
        }
    }

    /// Drops what discovery said about a kind: the server answered 404 for its resource type
    /// (a CRD removed or changed), so the next use asks again.
    fn forget_kind(&self, api_version: &str, kind: &str) {
        self.lock_kinds()
            .remove(&(api_version.to_string(), kind.to_string()));
    }

    fn lock_kinds(&self) -> std::sync::MutexGuard<'_, ResolvedKinds> {
        // A poisoned cache only means another task panicked mid-insert; the map is still valid.
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unknown_kind(&self, api_version: &str, kind: &str) -> ClusterError {
        let builtin = !api_version.contains('.');
        ClusterError::UnknownKind {
            cluster: self.name.clone(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            hint: if builtin {
                " (is the apiVersion right for this Kubernetes version?)".to_string()
            } else {
                " (is its CustomResourceDefinition installed?)".to_string()
            },
        }
    }

    fn api_error(&self, verb: &'static str, object: &str, error: &kube::Error) -> ClusterError {
        ClusterError::Api {
            cluster: self.name.clone(),
            verb,
            object: object.to_string(),
            code: match error {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            },
            message: error_text(error),
        }
    }

    async fn api_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<(Api<DynamicObject>, bool), ClusterError> {
        let resolved = self.resolve(api_version, kind).await?;
        let api = match (resolved.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resolved.resource),
            (true, None) => Api::default_namespaced_with(self.client.clone(), &resolved.resource),
            (false, _) => Api::all_with(self.client.clone(), &resolved.resource),
        };
        Ok((api, resolved.namespaced))
    }

    /// True when `kind` in `api_version` is namespaced on this cluster.
    pub async fn is_namespaced(&self, api_version: &str, kind: &str) -> Result<bool, ClusterError> {
        Ok(self.resolve(api_version, kind).await?.namespaced)
    }

    /// The live object, or `None` when it does not exist.
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ClusterError> {
        let (api, _) = self
            .api_for(&key.api_version, &key.kind, key.namespace.as_deref())
            .await?;
        let span = tracing::debug_span!("get", object = %key, cluster = %self.name);
        let found = retry::with_retries(self.retry, "get", || api.get_opt(&key.name))
            .instrument(span)
            .await
            .map_err(|e| self.api_error("get", &key.to_string(), &e))?;
        found
            .map(to_value)
            .transpose()
            .map_err(|e| ClusterError::Api {
                cluster: self.name.clone(),
                verb: "get",
                object: key.to_string(),
                code: None,
                message: e.to_string(),
            })
    }

    /// Server-side applies `object` as field manager `bowline`; with `dry_run` nothing is
    /// stored and the answer is what the object would become. `force` takes over fields owned
    /// by other managers instead of failing with a conflict. Returns the object as the server
    /// answered.
    pub async fn apply(
        &self,
        object: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, ClusterError> {
        match self.apply_once(object, dry_run, force).await {
            // The resource type itself is gone (no object name in the answer): what discovery
            // said is stale. Asked again, a kind no longer served is reported as unknown.
            Err(ResourceGone(key)) => {
                self.forget_kind(&key.api_version, &key.kind);
                self.apply_once(object, dry_run, force)
                    .await
                    .map_err(|e| self.apply_failure(e))
            }
            other => other.map_err(|e| self.apply_failure(e)),
        }
    }

    fn apply_failure(&self, error: ApplyError) -> ClusterError {
        match error {
            ApplyError::Failed(e) => e,
            ResourceGone(key) => ClusterError::Api {
                cluster: self.name.clone(),
                verb: "apply",
                object: key.to_string(),
                code: Some(404),
                message: "the server could not find the requested resource".into(),
            },
        }
    }

    async fn apply_once(
        &self,
        object: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, ApplyError> {
        let key = ObjectKey::of(object);
        let (api, namespaced) = self
            .api_for(&key.api_version, &key.kind, key.namespace.as_deref())
            .await?;
        let mut body = object.clone();
        if !namespaced && let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("namespace");
        }
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.dry_run = dry_run;
        params.force = force;
        let span =
            tracing::info_span!("apply", object = %key, cluster = %self.name, dry_run, force);
        let patch = Patch::Apply(&body);
        let answer = retry::with_retries(self.retry, "apply", || {
            api.patch(&key.name, &params, &patch)
        })
        .instrument(span)
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(kube::Error::Api(status))
                if status.code == 404
                    && status.details.as_ref().is_none_or(|d| d.name.is_empty()) =>
            {
                return Err(ResourceGone(key));
            }
            Err(e) => {
                return Err(ApplyError::Failed(self.api_error(
                    if dry_run { "dry-run apply" } else { "apply" },
                    &key.to_string(),
                    &e,
                )));
            }
        };
        to_value(answer).map_err(|e| {
            ApplyError::Failed(ClusterError::Api {
                cluster: self.name.clone(),
                verb: "apply",
                object: key.to_string(),
                code: None,
                message: e.to_string(),
            })
        })
    }

    /// Deletes the object (background propagation); `false` when it was already gone.
    pub async fn delete(&self, key: &ObjectKey, dry_run: bool) -> Result<bool, ClusterError> {
        let (api, _) = self
            .api_for(&key.api_version, &key.kind, key.namespace.as_deref())
            .await?;
        let mut params = DeleteParams::background();
        params.dry_run = dry_run;
        let span = tracing::info_span!("delete", object = %key, cluster = %self.name, dry_run);
        match retry::with_retries(self.retry, "delete", || api.delete(&key.name, &params))
            .instrument(span)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.api_error("delete", &key.to_string(), &e)),
        }
    }

    /// Every live object that carries bowline's labels for `app`, across all listable kinds:
    /// namespaced kinds in `namespaces`, cluster-scoped kinds cluster-wide. The caller narrows
    /// the result with [`prune::select`].
    #[tracing::instrument(level = "info", skip(self), fields(cluster = %self.name))]
    pub async fn list_managed(
        &self,
        app: &str,
        namespaces: &[String],
    ) -> Result<Vec<Value>, ClusterError> {
        self.list_labelled(&prune::selector(app), namespaces, true)
            .await
    }

    /// Like [`Cluster::list_managed`], for namespaced kinds in `namespaces` only.
    #[tracing::instrument(level = "info", skip(self), fields(cluster = %self.name))]
    pub async fn list_managed_in(
        &self,
        app: &str,
        namespaces: &[String],
    ) -> Result<Vec<Value>, ClusterError> {
        self.list_labelled(&prune::selector(app), namespaces, false)
            .await
    }

    /// Whether objects bowline manages for applications other than `app` live in `namespace`:
    /// such a namespace is never pruned, whoever created it.
    #[tracing::instrument(level = "info", skip(self), fields(cluster = %self.name))]
    pub async fn namespace_used_by_others(
        &self,
        namespace: &str,
        app: &str,
    ) -> Result<bool, ClusterError> {
        let found = self
            .list_labelled(
                &prune::others_selector(app),
                &[namespace.to_string()],
                false,
            )
            .await?;
        Ok(!found.is_empty())
    }

    /// Live objects matching the label `selector`: namespaced kinds in `namespaces`, and
    /// cluster-scoped kinds cluster-wide when `cluster_scoped`.
    fn lock_listable(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(ListableResources, std::time::Instant)>> {
        // A poisoned cache only means another task panicked mid-insert; it is still valid.
        self.listable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every listable resource, from a full discovery cached for [`DISCOVERY_TTL`].
    async fn listable_resources(&self) -> Result<ListableResources, ClusterError> {
        if let Some((resources, since)) = self.lock_listable().as_ref()
            && since.elapsed() < DISCOVERY_TTL
        {
            return Ok(resources.clone());
        }
        let discovery = retry::with_retries(self.retry, "discovery", || {
            Discovery::new(self.client.clone()).run()
        })
        .await
        .map_err(|e| self.api_error("discover", "API resources", &e))?;
        let resources: ListableResources = std::sync::Arc::new(
            discovery
                .groups()
                .flat_map(|g| g.recommended_resources())
                .filter(|(r, c)| listable(c) && !r.plural.contains('/'))
                .collect(),
        );
        *self.lock_listable() = Some((resources.clone(), std::time::Instant::now()));
        Ok(resources)
    }

    async fn list_labelled(
        &self,
        selector: &str,
        namespaces: &[String],
        cluster_scoped: bool,
    ) -> Result<Vec<Value>, ClusterError> {
        match self
            .list_labelled_in(selector, namespaces, cluster_scoped)
            .await
        {
            // A resource the cached discovery lists is gone (a CRD removed): discover again.
            Err(ClusterError::Api {
                code: Some(404), ..
            }) => {
                self.lock_listable().take();
                self.list_labelled_in(selector, namespaces, cluster_scoped)
                    .await
            }
            other => other,
        }
    }

    async fn list_labelled_in(
        &self,
        selector: &str,
        namespaces: &[String],
        cluster_scoped: bool,
    ) -> Result<Vec<Value>, ClusterError> {
        let resources = self.listable_resources().await?;
        let params = ListParams::default().labels(selector);
        let mut found = Vec::new();
        for (resource, capabilities) in resources.iter() {
            if !cluster_scoped && capabilities.scope != Scope::Namespaced {
                continue;
            }
            let apis: Vec<Api<DynamicObject>> = if capabilities.scope == Scope::Namespaced {
                namespaces
                    .iter()
                    .map(|ns| Api::namespaced_with(self.client.clone(), ns, resource))
                    .collect()
            } else {
                vec![Api::all_with(self.client.clone(), resource)]
            };
            for api in apis {
                let list = retry::with_retries(self.retry, "list", || api.list(&params))
                    .await
                    .map_err(|e| self.api_error("list", &resource.plural, &e))?;
                for item in list.items {
                    let mut value = to_value(item).map_err(|e| ClusterError::Api {
                        cluster: self.name.clone(),
                        verb: "list",
                        object: resource.plural.clone(),
                        code: None,
                        message: e.to_string(),
                    })?;
                    // List items carry no apiVersion/kind of their own.
                    if let Some(map) = value.as_object_mut() {
                        map.insert("apiVersion".into(), resource.api_version.clone().into());
                        map.insert("kind".into(), resource.kind.clone().into());
                    }
                    found.push(value);
                }
            }
        }
        Ok(found)
    }

    /// The current health of a live object, with the reasons of its failing pods.
    pub async fn health(&self, key: &ObjectKey) -> Result<Health, ClusterError> {
        let Some(live) = self.get(key).await? else {
            return Ok(Health::Progressing(format!("{key} does not exist yet")));
        };
        if !health::has_rollout(&live) {
            return Ok(health::assess(&live, &[]));
        }
        let pods = self.pods_of(&live).await?;
        Ok(health::assess(&live, &pods))
    }

    /// The pods a workload's `spec.selector.matchLabels` selects, in its namespace.
    async fn pods_of(&self, workload: &Value) -> Result<Vec<Value>, ClusterError> {
        let Some(labels) = workload
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .filter(|l| !l.is_empty())
        else {
            return Ok(Vec::new());
        };
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let namespace = workload
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let (api, _) = self.api_for("v1", "Pod", namespace).await?;
        let params = ListParams::default().labels(&selector);
        let list = retry::with_retries(self.retry, "list pods", || api.list(&params))
            .await
            .map_err(|e| self.api_error("list", "pods", &e))?;
        list.items
            .into_iter()
            .map(to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Api {
                cluster: self.name.clone(),
                verb: "list",
                object: "pods".to_string(),
                code: None,
                message: e.to_string(),
            })
    }
}

fn listable(capabilities: &ApiCapabilities) -> bool {
    capabilities.supports_operation(verbs::LIST) && capabilities.supports_operation(verbs::DELETE)
}

fn to_value(object: DynamicObject) -> Result<Value, serde_json::Error> {
    serde_json::to_value(object)
}

/// The most useful text of a kube error: the server's message for API errors, the whole
/// source chain for transport errors.
fn error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" ({} {})", status.code, status.reason)
            };
            format!("{}{reason}", status.message)
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let s_text = s.to_string();
                if !text.contains(&s_text) {
                    text.push_str(": ");
                    text.push_str(&s_text);
                }
                source = s.source();
            }
            text
        }
    }
}
