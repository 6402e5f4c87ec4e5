//! An in-memory Kubernetes API server for tests.
//!
//! It speaks the real wire protocol over plain HTTP on 127.0.0.1, so `kube::Client` (through a
//! kubeconfig) and a real `kubectl` can talk to it. [`TestServer::start`] runs it on a background
//! thread with its own tokio runtime, for sync and async tests alike.
//!
//! # Reproduced API-server behaviours
//!
//! - `/version` (reports v1.32.2), `/healthz`, `/readyz`, `/livez`.
//! - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`
//!   (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList` with names, singular names,
//!   scope, kinds, verbs, short names, categories and `/status` subresources), and aggregated
//!   discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) when the `Accept` header asks
//!   for it.
//! - `/openapi/v2` and `/openapi/v3` (index plus one document per group/version) with the
//!   operations and query parameters kubectl checks (`fieldValidation`, `dryRun`, …), but no
//!   type schemas.
//! - Built-in resources: v1 namespaces, configmaps, secrets, services, serviceaccounts, pods,
//!   events, persistentvolumeclaims; apps/v1 deployments, statefulsets, daemonsets, replicasets;
//!   batch/v1 jobs, cronjobs; autoscaling/v2 horizontalpodautoscalers; networking.k8s.io/v1
//!   ingresses; policy/v1 poddisruptionbudgets; rbac.authorization.k8s.io/v1 roles,
//!   rolebindings, clusterroles, clusterrolebindings; apiextensions.k8s.io/v1
//!   customresourcedefinitions; coordination.k8s.io/v1 leases.
//! - Creating a CRD registers its group, served versions, plural, singular, kind, short names,
//!   scope and status subresource in discovery; deleting it unregisters them and deletes its
//!   custom resources.
//! - get, list (one namespace or all; `labelSelector` with `=`, `==`, `!=`, `in`, `notin`,
//!   exists, `!`; `fieldSelector` on any dotted path with `=`, `==`, `!=`; `limit`/`continue`
//!   paging), watch (`watch=true`: newline-delimited `WatchEvent`s from a `resourceVersion`, or
//!   synthetic `ADDED` events for the current state; `410 Expired` for versions older than the
//!   kept history; `timeoutSeconds`), create, update (PUT with `resourceVersion` precondition →
//!   `409 Conflict`), delete (a `Status` with `details`, or the namespace in `Terminating` phase;
//!   namespace deletion removes its objects; owner-reference garbage collection unless
//!   `propagationPolicy=Orphan`), deletecollection.
//! - PATCH: `application/apply-patch+yaml` (server-side apply, YAML or JSON body),
//!   `application/merge-patch+json`, `application/strategic-merge-patch+json` (list maps merged
//!   by key, `$patch: delete`/`replace` in lists, other directives ignored),
//!   `application/json-patch+json`.
//! - Query parameters `fieldManager` (required for apply), `force`, `dryRun=All` (the whole
//!   pipeline runs, nothing is stored, the resource version is unchanged), `fieldValidation`
//!   (`Strict`/`Warn`/`Ignore` accepted).
//! - Server-side apply: `managedFields` (`Apply` and `Update` operations, `fieldsV1` in the real
//!   `f:`/`k:{…}`/`v:` format, `subresource: status`), pruning of fields a manager stops
//!   applying (unless another manager owns them), conflicts with other managers
//!   (`409` with `FieldManagerConflict` causes and the real message) unless `force=true`, which
//!   moves ownership; updates take ownership of what they change; the default manager comes from
//!   the `User-Agent` like the real server; no-op writes keep the resource version.
//! - List-map semantics for containers, init/ephemeral containers, env, volumes, volume mounts,
//!   volume devices, image pull secrets, container and service ports, conditions, owner
//!   references, topology spread constraints, host aliases; `finalizers` as a set; other lists
//!   atomic; selectors and key references atomic maps.
//! - Defaulting: uid, resourceVersion (one global counter), creationTimestamp, generation
//!   (bumped on spec changes), namespace phase/finalizers/`kubernetes.io/metadata.name` label;
//!   Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, HPA, Service (cluster IPs from
//!   10.96.0.0/12, node ports), Secret (`type`, `stringData` folded into `data`), pod spec and
//!   container defaults (pull policy, termination message, probes, ports, volume modes), RBAC
//!   subject API groups, CRD status/names; resource quantities canonicalised.
//! - Validation: unknown namespace (every write, dry-run or not, of a namespaced object: `404`
//!   `NotFound`, `namespaces "x" not found`, details `{name, kind: namespaces}`, as the
//!   real server's `NamespaceLifecycle` admission answers), URL/body mismatches of
//!   name, namespace, apiVersion and kind (`400`), unknown resources (`404`), invalid names and
//!   workload selectors (`422 Invalid`), protobuf bodies (`415`); all errors are `Status` bodies.
//! - Simulated controllers: Deployments get ReplicaSets and Running/Ready pods and an available
//!   status (or `ProgressDeadlineExceeded` with waiting pods for images marked with
//!   [`TestServer::fail_rollouts`]); StatefulSets, DaemonSets and Jobs get pods and ready or
//!   complete statuses; status is written through the `status` subresource by
//!   `kube-controller-manager` (pods' status by `kubelet`).
//! - The `/status` subresource (get, put, patch, apply) of every type with status, and the
//!   `/scale` subresource (`autoscaling/v1` `Scale`) of Deployments, StatefulSets and
//!   ReplicaSets (`kubectl scale`), recorded in `managedFields` with their subresource.
//! - `Table` output (`Accept: application/json;as=Table;…`) for kubectl's `get`, with the
//!   usual columns of deployments, replica sets, stateful sets, pods, services, config maps,
//!   secrets, namespaces and CRDs, and name/age for the rest.
//! - Metadata-only reads (`Accept: application/json;as=PartialObjectMetadata…`) for get, list
//!   and watch; watches also honour the `Table` media type (`kubectl get -w`).
//! - `/openapi/v2` answers protobuf requests (older kubectl) with an empty document.
//! - A request log and fault injection for tests.
//!
//! # Not reproduced
//!
//! - TLS, authentication and authorization (any or no token is accepted), admission webhooks,
//!   API priority and fairness, audit, protobuf and CBOR encodings (`415`).
//! - OpenAPI type schemas: `fieldValidation=Strict` does not reject unknown fields, and
//!   kubectl's client-side validation has nothing to check against. Merge semantics come from
//!   field names, not from schemas, so custom resources follow the same name-based rules.
//! - Full validation of objects (only names and workload selectors are checked), immutable
//!   fields, defaulting of rarely used fields, custom resource schema pruning/defaulting and
//!   version conversion (custom resources are served at every version unchanged).
//! - Finalizers and graceful deletion: deletes are immediate (`deletionTimestamp` never
//!   lingers); `kubernetes` service in `default` and service accounts per namespace are not
//!   created; no events are recorded; no scheduler, nodes or real rollout timing.
//! - Managed fields of `PUT` bodies are ignored (the real server lets clients reset them).
//! - Watch bookmarks and `sendInitialEvents` streaming lists; resource-version semantics of
//!   list requests (`resourceVersionMatch`): lists always return the latest state.

#![warn(missing_docs)]

mod controllers;
mod defaults;
mod discovery;
mod fields;
mod http;
mod resources;
mod selector;
mod status;
mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use store::{Op, State, Write};

/// The Kubernetes version reported by `/version`.
pub const KUBERNETES_VERSION: &str = "v1.32.2";

/// Settings of a [`TestServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// How long the simulated controllers wait before reacting to a change (default 100 ms).
    pub controller_delay: Duration,
    /// The address to listen on (default `127.0.0.1:0`, a random port).
    pub listen: SocketAddr,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_delay: Duration::from_millis(100),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// URL path, e.g. `/apis/apps/v1/namespaces/default/deployments/web`.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The response status code.
    pub status: u16,
    /// Whether the request asked for `dryRun=All`.
    pub dry_run: bool,
}

/// An injected failure, see [`TestServer::fail_next`].
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    pub status: u16,
    pub remaining: usize,
}

/// State shared by the HTTP handlers, the controllers and the test handle.
pub(crate) struct Shared {
    state: Mutex<State>,
    options: Options,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    /// Locks the state (a panic while locked does not make the state unusable for tests).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The current time in the API server's format (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            // The server may already be gone; nothing to do then.
            let _ = tx.send(());
        }
        if let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            // A panicked server thread has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// A running in-memory API server. Clones share the server; it stops when the last one is
/// dropped.
#[derive(Clone)]
pub struct TestServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url())
            .finish()
    }
}

impl TestServer {
    /// Starts a server on a random port of 127.0.0.1 with default [`Options`].
    ///
    /// # Panics
    ///
    /// When the port cannot be bound or the runtime cannot be built.
    pub fn start() -> TestServer {
        Self::start_with(Options::default())
    }

    /// Starts a server with the given options, in a background thread with its own runtime.
    ///
    /// # Panics
    ///
    /// When the address cannot be bound or the runtime cannot be built.
    pub fn start_with(options: Options) -> TestServer {
        Self::try_start_with(options)
            .unwrap_or_else(|e| panic!("cannot start the test API server: {e}"))
    }

    /// Like [`TestServer::start_with`], returning errors instead of panicking.
    pub fn try_start_with(options: Options) -> std::io::Result<TestServer> {
        let listener = std::net::TcpListener::bind(options.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-api-test-server")
            .enable_all()
            .build()?;
        let (events, _) = tokio::sync::broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(events)),
            options,
            runtime: runtime.handle().clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = http::router(shared.clone());
        let thread = std::thread::Builder::new()
            .name("kube-api-test-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("test API server cannot listen: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        result = axum::serve(listener, router) => {
                            if let Err(e) = result {
                                tracing::error!("test API server stopped: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                runtime.shutdown_background();
            })?;
        Ok(TestServer {
            inner: Arc::new(Inner {
                shared,
                addr,
                shutdown: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:38123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A kubeconfig with one cluster, user (a bearer token) and context named `context`, which
    /// is also the current context.
    pub fn kubeconfig(&self, context: &str) -> String {
        kubeconfig_for(&[(context, self)])
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Seeds an object as if someone else had created it (manager `kubectl-create`): defaulting
    /// runs, CRDs register their resources, and a `status` in the object is kept. Namespaced
    /// objects without a namespace go to `default`.
    ///
    /// # Panics
    ///
    /// When the server refuses the object (unknown kind, missing namespace, invalid, exists).
    pub fn create(&self, object: Value) -> Value {
        self.create_as("kubectl-create", object)
    }

    /// Like [`TestServer::create`], recording `manager` as the field manager.
    ///
    /// # Panics
    ///
    /// When the server refuses the object.
    pub fn create_as(&self, manager: &str, object: Value) -> Value {
        self.try_create_as(manager, object)
            .unwrap_or_else(|e| panic!("seeding failed: {e}"))
    }

    /// Like [`TestServer::create_as`], returning the refusal's message instead of panicking.
    pub fn try_create_as(&self, manager: &str, object: Value) -> Result<Value, String> {
        let has_status = object.get("status").is_some();
        let written = self
            .shared()
            .lock()
            .seed(object, manager)
            .map_err(|e| e.message)?;
        if !has_status {
            controllers::after_write(self.shared(), &written.object);
        }
        Ok(written.object)
    }

    /// Reads an object, `None` when absent or of an unknown kind.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.shared().lock();
        let rt = state.find_kind(api_version, kind)?;
        state.get(&rt, namespace, name).ok()
    }

    /// Lists objects of a kind, in one namespace or (with `None`) all; empty for unknown kinds.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let state = self.shared().lock();
        let Some(rt) = state.find_kind(api_version, kind) else {
            return Vec::new();
        };
        state.list(&rt, namespace, &Default::default(), &Default::default())
    }

    /// Changes fields as another field manager would: an `Update` operation with a JSON merge
    /// patch (e.g. an HPA controller setting `spec.replicas`). Returns the stored object.
    ///
    /// # Panics
    ///
    /// When the object does not exist or the patch is refused.
    pub fn patch_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        merge_patch: Value,
    ) -> Value {
        let written = {
            let mut state = self.shared().lock();
            let rt = state
                .find_kind(api_version, kind)
                .unwrap_or_else(|| panic!("unknown kind {api_version} {kind}"));
            let write = Write {
                rt,
                namespace: namespace.map(str::to_string),
                name: Some(name.to_string()),
                subresource: None,
                manager: manager.to_string(),
                dry_run: false,
                force: false,
                keep_status: false,
            };
            state
                .write(write, Op::MergePatch(merge_patch))
                .unwrap_or_else(|e| panic!("patch_as failed: {}", e.message))
        };
        if written.changed {
            controllers::after_write(self.shared(), &written.object);
        }
        written.object
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared().lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared().lock().requests.clear();
    }

    /// The next `count` requests with this method (`None`: any) whose path contains
    /// `path_contains` fail with `status` and a `Status` body (`Retry-After: 0` for 429 and 503).
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, status: u16, count: usize) {
        self.shared().lock().faults.push(Fault {
            method: method.map(str::to_ascii_uppercase),
            path_contains: path_contains.to_string(),
            status,
            remaining: count,
        });
    }

    /// Deployments (and StatefulSets, DaemonSets, Jobs) whose pod template uses an image
    /// containing `image_substring` never become ready: Deployments report
    /// `ProgressDeadlineExceeded`, and their pods wait with `reason` (e.g. `ImagePullBackOff`).
    /// It applies from the next reconciliation, i.e. to workloads created or changed afterwards.
    pub fn fail_rollouts(&self, image_substring: &str, reason: &str) {
        self.shared()
            .lock()
            .failing_images
            .push((image_substring.to_string(), reason.to_string()));
    }
}

/// A kubeconfig with one context per server (cluster and user named like the context); the
/// first is the current context.
pub fn kubeconfig_for(contexts: &[(&str, &TestServer)]) -> String {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut ctxs = String::new();
    for (name, server) in contexts {
        let name = yaml_string(name);
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {}\n",
            server.url()
        ));
        users.push_str(&format!("- name: {name}\n  user:\n    token: test-token\n"));
        ctxs.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n"
        ));
    }
    let current = contexts
        .first()
        .map(|(n, _)| yaml_string(n))
        .unwrap_or_else(|| "\"\"".to_string());
    format!(
        "apiVersion: v1\nkind: Config\npreferences: {{}}\nclusters:\n{clusters}users:\n{users}contexts:\n{ctxs}current-context: {current}\n"
    )
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}
