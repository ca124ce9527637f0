//! Watch streams: replay from the event log, then follow it live.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Inner;
use crate::error::ApiError;
use crate::faults::lock;
use crate::partial::{self, Shape};
use crate::resource::ResourceType;
use crate::selectors::Selector;
use crate::store::{EventType, LogEntry};

/// What a watch selects.
pub(crate) struct WatchFilter {
    pub rt: ResourceType,
    /// `Some` only for a namespaced watch of a namespaced type.
    pub namespace: Option<String>,
    pub selector: Selector,
    /// Metadata-only watches send `PartialObjectMetadata` objects.
    pub shape: Shape,
}

/// Watch request options.
pub(crate) struct WatchOptions {
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut s = format!("{{\"type\":\"{kind}\",\"object\":");
    s.push_str(&serde_json::to_string(obj).unwrap_or_else(|_| "{}".into()));
    s.push_str("}\n");
    Bytes::from(s)
}

fn bookmark_object(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut obj = json!({
        "apiVersion": rt.api_version(),
        "kind": rt.kind,
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    obj
}

impl WatchFilter {
    /// One event line, the object reduced to its metadata for
    /// metadata-only watches (a list-shaped Accept leaves objects whole, as
    /// the real server's transformer does when it cannot convert).
    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        match &self.shape {
            Shape::Partial(v) => line(kind, &partial::object(obj, v)),
            _ => line(kind, obj),
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        self.line("BOOKMARK", &bookmark_object(&self.rt, rv, initial_end))
    }

    fn selects_entry(&self, e: &LogEntry) -> bool {
        e.gvr == self.rt.gvr() && (self.namespace.is_none() || e.namespace == self.namespace)
    }

    /// The event a watcher with this filter sees for a log entry, like the
    /// real API server's cacher (selector transitions become ADDED/DELETED).
    fn convert(&self, e: &LogEntry) -> Option<Bytes> {
        if !self.selects_entry(e) {
            return None;
        }
        let now = self.selector.matches(&e.object);
        match e.kind {
            EventType::Added | EventType::Deleted => {
                now.then(|| self.line(e.kind.as_str(), &e.object))
            }
            EventType::Modified => {
                let before = e.old.as_ref().is_some_and(|o| self.selector.matches(o));
                match (before, now) {
                    (true, true) => Some(self.line("MODIFIED", &e.object)),
                    (false, true) => Some(self.line("ADDED", &e.object)),
                    (true, false) => {
                        let mut old = e.old.as_deref().cloned().unwrap_or(Value::Null);
                        old["metadata"]["resourceVersion"] = json!(e.rv.to_string());
                        Some(self.line("DELETED", &old))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// Counts open watches; on drop (stream finished or client gone) it
/// decrements and wakes `wait_for` callers.
struct ActiveGuard(Arc<Inner>);

impl ActiveGuard {
    fn new(inner: Arc<Inner>) -> Self {
        inner.active_watches.fetch_add(1, Ordering::SeqCst);
        lock(&inner.store).notify.send_modify(|_| {});
        ActiveGuard(inner)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::SeqCst);
        lock(&self.0.store).notify.send_modify(|_| {});
    }
}

struct WatchState {
    _active: ActiveGuard,
    inner: Arc<Inner>,
    filter: WatchFilter,
    cursor: u64,
    pending: VecDeque<Bytes>,
    bookmarks: bool,
    bookmark_every: Duration,
    next_bookmark: Instant,
    deadline: Instant,
    changes: watch::Receiver<u64>,
    kill: watch::Receiver<u64>,
    shutdown: Option<watch::Receiver<bool>>,
    finished: bool,
}

enum Wake {
    Changed,
    Bookmark,
    Finish,
}

async fn wait_shutdown(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            let _ = rx.wait_for(|v| *v).await;
        }
        None => std::future::pending().await,
    }
}

impl WatchState {
    fn drain(&mut self) {
        let store = lock(&self.inner.store);
        let current = store.current_rv();
        let result = if self.cursor > current {
            // A resourceVersion from the future (e.g. the server was restarted):
            // make the client re-list rather than wait for it.
            Err(current)
        } else {
            store.events_since(self.cursor)
        };
        match result {
            Err(oldest) => {
                let mut err = ApiError::new(
                    410,
                    format!("too old resource version: {} ({})", self.cursor, oldest),
                );
                err.reason = "Expired".into();
                let status = err.to_status();
                self.pending.push_back(line("ERROR", &status));
                self.finished = true;
            }
            Ok(entries) => {
                for e in entries {
                    if let Some(b) = self.filter.convert(&e) {
                        self.pending.push_back(b);
                    }
                }
                self.cursor = store.current_rv();
            }
        }
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.finished {
                return None;
            }
            self.changes.borrow_and_update();
            self.drain();
            if !self.pending.is_empty() || self.finished {
                continue;
            }
            let wake = tokio::select! {
                r = self.changes.changed() => if r.is_ok() { Wake::Changed } else { Wake::Finish },
                _ = tokio::time::sleep_until(self.next_bookmark) => Wake::Bookmark,
                _ = tokio::time::sleep_until(self.deadline) => Wake::Finish,
                _ = self.kill.changed() => Wake::Finish,
                _ = wait_shutdown(&mut self.shutdown) => Wake::Finish,
            };
            match wake {
                Wake::Changed => {}
                Wake::Bookmark => {
                    // Without bookmarks, an empty line: clients skip it, and the
                    // write lets the server notice a client that went away
                    // (otherwise an idle stream would live until its timeout).
                    self.pending.push_back(if self.bookmarks {
                        self.filter.bookmark(self.cursor, false)
                    } else {
                        Bytes::from_static(b"\n")
                    });
                    self.next_bookmark = Instant::now() + self.bookmark_every;
                }
                Wake::Finish => self.finished = true,
            }
        }
    }
}

/// Start a watch. Errors (bad resourceVersion) are returned before streaming starts.
pub(crate) fn start(
    inner: Arc<Inner>,
    filter: WatchFilter,
    opts: WatchOptions,
    shutdown: Option<watch::Receiver<bool>>,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, ApiError> {
    let rv = opts.resource_version.as_deref().unwrap_or("");
    let from_rv = match rv {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let bookmark_every = *lock(&inner.bookmark_interval);
    let kill = inner.kill.subscribe();
    let mut pending = VecDeque::new();
    let (changes, cursor) = {
        let store = lock(&inner.store);
        let changes = store.notify.subscribe();
        // Like the real server: no resourceVersion (or "0") starts with the
        // current state as synthetic ADDED events; so does sendInitialEvents.
        if from_rv.is_none() || opts.send_initial_events {
            let ns = filter.namespace.as_deref();
            for obj in store.list(&filter.rt, ns, &filter.selector) {
                pending.push_back(filter.line("ADDED", &obj));
            }
            let now = store.current_rv();
            if opts.send_initial_events {
                pending.push_back(filter.bookmark(now, true));
            }
            (changes, now)
        } else {
            (changes, from_rv.unwrap_or(0))
        }
    };
    let state = WatchState {
        _active: ActiveGuard::new(inner.clone()),
        inner,
        filter,
        cursor,
        pending,
        bookmarks: opts.bookmarks,
        bookmark_every,
        next_bookmark: Instant::now() + bookmark_every,
        deadline: Instant::now() + opts.timeout,
        changes,
        kill,
        shutdown,
        finished: false,
    };
    Ok(futures::stream::unfold(state, |mut st| async move {
        st.next_chunk().await.map(|b| (Ok(b), st))
    }))
}
