//! A small stateful stand-in for the Kubernetes API server, speaking plain
//! HTTP, good enough for `kube::Client`, `kube::runtime::watcher`/`Controller`
//! and `kube::runtime::events::Recorder` in tests and demos.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let standin = kube_standin::StandIn::new();
//! let server = standin.serve("127.0.0.1:0".parse()?).await?;
//! // build a kube::Client from server.url or server.kubeconfig_yaml() ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See the crate README for what is and is not supported.

mod conversion;
mod error;
mod faults;
mod handlers;
mod partial;
mod patch;
mod requests;
mod resource;
mod selectors;
mod server;
mod store;
mod token;
mod validation;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch as tokio_watch;

pub use error::{
    ApiError, ETCD_MAX_REQUEST_BYTES, MAX_REQUEST_BODY_BYTES, StatusCause, StatusDetails,
    reason_for_code,
};
pub use faults::{Fault, FaultAction, FaultRule, Faults, RequestCounts, Verb};
pub use patch::PatchKind;
pub use requests::{REQUEST_LOG_CAPACITY, RequestRecord};
pub use resource::ResourceType;
pub use selectors::Selector;
pub use store::DEFAULT_EVENT_RETENTION;
pub use token::{ISSUER, TokenRequestRecord, decode_token_claims};

use faults::lock;
use requests::RequestLog;
use store::{DeleteOpts, Store, Sub};

pub(crate) struct Inner {
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Faults,
    pub(crate) counts: Mutex<RequestCounts>,
    /// Every resource request, bounded ([`REQUEST_LOG_CAPACITY`]).
    pub(crate) requests: Mutex<RequestLog>,
    /// Tokens handed out by the ServiceAccount `token` subresource.
    pub(crate) token_requests: Mutex<Vec<TokenRequestRecord>>,
    /// Bumped by [`StandIn::close_watches`]; open watch streams end on change.
    pub(crate) kill: tokio_watch::Sender<u64>,
    pub(crate) bookmark_interval: Mutex<Duration>,
    pub(crate) verbose: AtomicBool,
    /// Watch streams currently open (over all servers).
    pub(crate) active_watches: AtomicUsize,
}

/// The stand-in API server state. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct StandIn {
    pub(crate) inner: Arc<Inner>,
}

impl Default for StandIn {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("resource_version", &self.resource_version())
            .finish()
    }
}

fn api_err(e: ApiError) -> anyhow::Error {
    anyhow::Error::new(e)
}

impl StandIn {
    /// A stand-in with the built-in resource types ([`ResourceType::builtins`]).
    pub fn new() -> Self {
        StandIn {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::new(DEFAULT_EVENT_RETENTION)),
                faults: Faults::default(),
                counts: Mutex::new(RequestCounts::default()),
                requests: Mutex::new(RequestLog::default()),
                token_requests: Mutex::new(Vec::new()),
                kill: tokio_watch::Sender::new(0),
                bookmark_interval: Mutex::new(Duration::from_secs(1)),
                verbose: AtomicBool::new(false),
                active_watches: AtomicUsize::new(0),
            }),
        }
    }

    /// Register another resource type.
    pub fn with_resource(self, r: ResourceType) -> Self {
        self.register(r);
        self
    }

    /// How many watch events are kept for resuming watches (default
    /// [`DEFAULT_EVENT_RETENTION`]); older resourceVersions get 410 Expired.
    pub fn with_event_retention(self, events: usize) -> Self {
        self.with_store_mut(|s| s.set_retention(events));
        self
    }

    /// Interval of BOOKMARK events on watches that allow them (default 1s).
    pub fn with_bookmark_interval(self, interval: Duration) -> Self {
        *lock(&self.inner.bookmark_interval) = interval.max(Duration::from_millis(10));
        self
    }

    /// Log every HTTP request to stderr.
    pub fn with_request_log(self, on: bool) -> Self {
        self.inner.verbose.store(on, Ordering::Relaxed);
        self
    }

    /// Register another resource type (shared-reference form).
    pub fn register(&self, r: ResourceType) {
        self.with_store_mut(|s| s.register(r));
    }

    /// All registered resource types.
    pub fn resource_types(&self) -> Vec<ResourceType> {
        self.with_store(|s| s.types().cloned().collect())
    }

    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&lock(&self.inner.store))
    }

    pub(crate) fn with_store_mut<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut lock(&self.inner.store))
    }

    fn resolve(&self, gvr: &str) -> anyhow::Result<ResourceType> {
        self.with_store(|s| s.type_by_gvr(gvr))
            .ok_or_else(|| api_err(ApiError::new(404, format!("unknown resource type {gvr:?}"))))
    }

    /// Bind `addr` (port 0 picks a free port) and serve the API in a spawned task.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<RunningServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let (tx, rx) = tokio_watch::channel(false);
        let app = server::router(server::ServerCtx {
            standin: self.clone(),
            shutdown: rx.clone(),
        });
        let mut graceful = rx;
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = graceful.wait_for(|v| *v).await;
                })
                .await;
        });
        Ok(RunningServer {
            url: format!("http://{local}"),
            addr: local,
            shutdown: tx,
            handle: Some(handle),
        })
    }

    /// One object as stored (`gvr` like `v1/secrets`), without HTTP.
    pub fn get(&self, gvr: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rt = self.resolve(gvr).ok()?;
        self.with_store(|s| s.get(&rt, namespace, name).cloned())
    }

    /// All objects of a type (`namespace = None`: all namespaces), sorted by namespace and name.
    pub fn list(&self, gvr: &str, namespace: Option<&str>) -> Vec<Value> {
        self.list_selected(gvr, namespace, "")
    }

    /// How many objects of a type (`namespace = None`: all namespaces) satisfy `pred`,
    /// counted in place: nothing is cloned, so a test can poll it often at any size.
    pub fn count(
        &self,
        gvr: &str,
        namespace: Option<&str>,
        pred: impl Fn(&Value) -> bool,
    ) -> usize {
        let Ok(rt) = self.resolve(gvr) else {
            return 0;
        };
        self.with_store(|s| s.count(&rt, namespace, pred))
    }

    /// How many objects of a type there are in all namespaces, without visiting them (cheap
    /// enough for a [`StandIn::wait_for`] predicate, which runs after every change).
    pub fn len(&self, gvr: &str) -> usize {
        let Ok(rt) = self.resolve(gvr) else {
            return 0;
        };
        self.with_store(|s| s.len(&rt))
    }

    /// Like [`StandIn::list`] with a label selector (`app=web,!old`).
    pub fn list_selected(
        &self,
        gvr: &str,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Vec<Value> {
        let (Ok(rt), Ok(sel)) = (
            self.resolve(gvr),
            Selector::parse(Some(label_selector), None),
        ) else {
            return Vec::new();
        };
        self.with_store(|s| s.list(&rt, namespace, &sel))
    }

    /// Create an object, as POST does (namespace from `metadata.namespace`,
    /// default `default`). Errors are [`ApiError`]s inside `anyhow`.
    pub fn create(&self, gvr: &str, obj: Value) -> anyhow::Result<Value> {
        let rt = self.resolve(gvr)?;
        self.with_store_mut(|s| s.create(&rt, None, obj))
            .map_err(api_err)
    }

    /// Create an object whose type is taken from its `apiVersion` and `kind`
    /// (namespace defaults to `default` for namespaced types).
    pub fn create_manifest(&self, obj: Value) -> anyhow::Result<Value> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let rt = self
            .with_store(|s| s.type_by_kind(api_version, kind))
            .ok_or_else(|| {
                api_err(ApiError::new(
                    404,
                    format!("no resource type for {api_version} {kind}"),
                ))
            })?;
        self.with_store_mut(|s| s.create(&rt, None, obj))
            .map_err(api_err)
    }

    /// Replace an object, as PUT does (name/namespace from the body).
    pub fn replace(&self, gvr: &str, obj: Value) -> anyhow::Result<Value> {
        self.put(gvr, obj, Sub::Main)
    }

    /// Replace an object's status, as PUT on `/status` does.
    pub fn replace_status(&self, gvr: &str, obj: Value) -> anyhow::Result<Value> {
        self.put(gvr, obj, Sub::Status)
    }

    fn put(&self, gvr: &str, obj: Value, sub: Sub) -> anyhow::Result<Value> {
        let rt = self.resolve(gvr)?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ns = ns.or_else(|| rt.namespaced.then(|| "default".to_string()));
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("metadata.name is required"))?
            .to_string();
        self.with_store_mut(|s| s.update(&rt, ns.as_deref(), &name, obj, sub))
            .map_err(api_err)
    }

    /// Apply a JSON merge patch to an object (or, with `status`, to its status
    /// subresource), as PATCH does.
    pub fn merge_patch(
        &self,
        gvr: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
        status: bool,
    ) -> anyhow::Result<Value> {
        let rt = self.resolve(gvr)?;
        let sub = if status { Sub::Status } else { Sub::Main };
        self.with_store_mut(|s| s.patch(&rt, namespace, name, PatchKind::Merge, &patch, None, sub))
            .map(|(v, _)| v)
            .map_err(api_err)
    }

    /// Delete an object, as DELETE does (finalizers mark it for deletion,
    /// garbage collection of dependents).
    pub fn delete(&self, gvr: &str, namespace: Option<&str>, name: &str) -> anyhow::Result<()> {
        let rt = self.resolve(gvr)?;
        self.with_store_mut(|s| s.delete(&rt, namespace, name, &DeleteOpts::default()))
            .map(|_| ())
            .map_err(api_err)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.with_store(|s| s.current_rv())
    }

    /// Number of watch streams currently open. Changes of this number wake
    /// [`StandIn::wait_for`] too, so tests can wait for watches to go away.
    pub fn active_watches(&self) -> usize {
        self.inner.active_watches.load(Ordering::SeqCst)
    }

    /// End every open watch stream (as if connections dropped); clients re-watch.
    pub fn close_watches(&self) {
        self.inner.kill.send_modify(|v| *v += 1);
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Snapshot of the HTTP request counters.
    pub fn counters(&self) -> RequestCounts {
        lock(&self.inner.counts).clone()
    }

    /// Zero the HTTP request counters.
    pub fn reset_counters(&self) {
        *lock(&self.inner.counts) = RequestCounts::default();
    }

    /// The request log: every resource request (the ones the counters
    /// count), oldest first, at most [`REQUEST_LOG_CAPACITY`] of them.
    ///
    /// ```no_run
    /// # fn demo(standin: kube_standin::StandIn, since: std::time::Instant) {
    /// let late_writes = standin
    ///     .requests()
    ///     .into_iter()
    ///     .filter(|r| r.at > since && r.is_write() && r.is_for("v1/secrets", Some("default"), "pull"))
    ///     .count();
    /// assert_eq!(late_writes, 0);
    /// # }
    /// ```
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.requests).snapshot()
    }

    /// The tokens the ServiceAccount `token` subresource handed out, oldest first
    /// (failed requests are in [`StandIn::requests`] only).
    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        lock(&self.inner.token_requests).clone()
    }

    /// Empty the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// Wait until `f` holds, re-checking after every state change (no
    /// polling). Returns `false` on timeout.
    pub async fn wait_for<F: Fn(&StandIn) -> bool>(&self, timeout: Duration, f: F) -> bool {
        let mut rx = self.with_store(|s| s.notify.subscribe());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if f(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return f(self),
            }
        }
    }
}

/// A server started by [`StandIn::serve`]. Dropping it stops the server too
/// (without waiting).
#[derive(Debug)]
pub struct RunningServer {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: tokio_watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// A kubeconfig pointing at this server: cluster, user (no auth) and
    /// context all named `kube-standin`, context current, namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-standin\n  cluster:\n    server: {}\n\
             contexts:\n- name: kube-standin\n  context:\n    cluster: kube-standin\n    user: kube-standin\n    namespace: default\n\
             current-context: kube-standin\nusers:\n- name: kube-standin\n  user: {{}}\npreferences: {{}}\n",
            self.url
        )
    }

    /// Stop accepting connections, end open watches and wait (at most 5s) for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(mut handle) = self.handle.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut handle)
                .await
                .is_err()
        {
            handle.abort();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
