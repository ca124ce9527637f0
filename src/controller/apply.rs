//! Do: carry out a plan against the API server and report how each item went.
//!
//! Every write checks the [`Fence`](super::fence::Fence) first and runs in a `k8s.write`
//! span. Secret writes ask for metadata-only answers
//! (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`), so an answer
//! never carries Secret data back, and their bodies are decoded here, never logged.

use std::collections::BTreeMap;
use std::future::Future;

use futures::{FutureExt, StreamExt};
use http::HeaderValue;
use http::header::ACCEPT;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{PartialObjectMeta, Request};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::memory::Written;
use super::plan::{PullSecretsOp, SecretOp};
use super::settle::OpResult;
use super::throttle::Signal;
use super::{Context, Error, PULL_SECRETS_ANNOTATION};
use crate::api::ECRTokenRefresh;
use crate::secret::{self, FIELD_MANAGER, Owner, SecretTarget};

/// The `Accept` header of a metadata-only answer.
const METADATA_ONLY: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

/// Runs one Kubernetes write inside a `k8s.write` span (kind, namespace, name, verb,
/// outcome: `success` or the HTTP status / error class), after checking the fence.
pub(super) async fn k8s_write<T, F>(
    ctx: &Context,
    kind: &str,
    namespace: &str,
    name: &str,
    verb: &str,
    write: F,
) -> Result<Result<T, kube::Error>, Error>
where
    F: Future<Output = Result<T, kube::Error>>,
{
    use tracing::Instrument as _;
    ctx.fence.check()?;
    let span = tracing::info_span!(
        "k8s.write",
        kind,
        namespace,
        name,
        verb,
        outcome = tracing::field::Empty
    );
    let result = write.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => "success".to_string(),
        Err(kube::Error::Api(status)) => status.code.to_string(),
        Err(_) => "transport_error".to_string(),
    };
    span.record("outcome", outcome.as_str());
    Ok(result)
}

/// The API's words for a failed call: HTTP status and message (never a body).
pub(super) fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        kube::Error::SerdeError(_) => "the API server's answer could not be decoded".to_string(),
        other => other.to_string(),
    }
}

/// Sends a Secret request asking for a metadata-only answer and decodes it here (so no
/// client library logs an answer that might carry Secret data). An error answer becomes
/// [`kube::Error::Api`] as kube makes it, with the `Retry-After` header (which API Priority
/// and Fairness sends with a plain-text 429) kept in `details.retryAfterSeconds`.
async fn send_quietly(
    ctx: &Context,
    mut request: http::Request<Vec<u8>>,
) -> Result<PartialObjectMeta<Secret>, kube::Error> {
    use http_body_util::BodyExt as _;
    request
        .headers_mut()
        .insert(ACCEPT, HeaderValue::from_static(METADATA_ONLY));
    let response = ctx
        .writer
        .send(request.map(kube::client::Body::from))
        .await?;
    let code = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?
        .to_bytes();
    if code.is_client_error() || code.is_server_error() {
        let mut status =
            serde_json::from_slice::<kube::core::Status>(&bytes).unwrap_or_else(|_| {
                kube::core::Status::failure(String::from_utf8_lossy(&bytes).trim(), "")
                    .with_code(code.as_u16())
            });
        if let Some(secs) = retry_after
            && status
                .details
                .as_ref()
                .is_none_or(|d| d.retry_after_seconds == 0)
        {
            status.details = serde_json::from_value(json!({ "retryAfterSeconds": secs })).ok();
        }
        return Err(kube::Error::Api(status.boxed()));
    }
    serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)
}

/// A request ready to send: its verb (span name), the request, and the resourceVersion it
/// was made from (updates).
type Built = (&'static str, http::Request<Vec<u8>>, Option<String>);

/// How many times one write is sent again after a 429 before it counts as failed.
const MAX_THROTTLED_RETRIES: u32 = 5;

/// What an answer says about the server's load (see [`super::throttle`]).
fn throttle_signal<T>(result: &Result<T, kube::Error>) -> Signal {
    match result {
        Err(kube::Error::Api(s)) if s.code == 429 => Signal::Throttled {
            retry_after: std::time::Duration::from_secs(u64::from(
                s.details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|&secs| secs > 0)
                    .unwrap_or(1),
            )),
        },
        Err(kube::Error::Api(s)) if s.code >= 500 => Signal::Overloaded,
        Err(kube::Error::HyperError(_) | kube::Error::Service(_)) => Signal::Overloaded,
        _ => Signal::Ok,
    }
}

fn secrets_path(namespace: &str) -> String {
    Secret::url_path(&(), Some(namespace))
}

/// Runs `start(item)` for every item, at most `limit` at once, each started as soon as one
/// finishes (pipelined: no batch waits for its slowest member); returns the outputs in the
/// order they finished.
///
/// `buffer_unordered` over a lazy stream: a future is made only when a place is free, so a
/// fan-out to N namespaces holds `limit` write futures (a few KiB each), never N of them.
async fn pipelined<I, F, Fut>(items: I, limit: usize, start: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future,
{
    futures::stream::iter(items)
        .map(start)
        .buffer_unordered(limit.max(1))
        .collect()
        .await
}

/// Writes and deletes Secrets for one resource.
pub(super) struct SecretWriter<'a> {
    pub ctx: &'a Context,
    pub owner: &'a Owner,
}

impl SecretWriter<'_> {
    /// Carries out `ops` (at most `controller.write_concurrency` at once, pipelined) and
    /// returns one result per op, in order; `render` gives the Secret to write at a target.
    ///
    /// Creates and updates go first; deletes of Secrets no longer targeted follow once they
    /// are done, so a Secret replaced by another (renamed, or a new format) is removed only
    /// after its replacement exists. A delete in a namespace where a write did not succeed
    /// is held back ([`OpResult::Failed`], retried with the resource) rather than leave the
    /// namespace with neither.
    ///
    /// # Errors
    /// [`Error::Fenced`] once the fence closes (the remaining ops are not sent).
    pub async fn run(
        &self,
        ops: &[SecretOp],
        render: &(dyn Fn(&SecretTarget) -> Secret + Sync),
    ) -> Result<Vec<OpResult>, Error> {
        let is_delete = |op: &SecretOp| matches!(op, SecretOp::Delete { .. });
        let mut results = self.run_some(ops, render, |op| !is_delete(op)).await?;
        let unwritten: std::collections::BTreeSet<&str> = ops
            .iter()
            .zip(&results)
            .filter(|(op, r)| !is_delete(op) && !matches!(r, Some(OpResult::Done { .. })))
            .map(|(op, _)| op.target().namespace.as_str())
            .collect();
        let deletes = self
            .run_some(ops, render, |op| {
                is_delete(op) && !unwritten.contains(op.target().namespace.as_str())
            })
            .await?;
        for (slot, done) in results.iter_mut().zip(deletes) {
            if done.is_some() {
                *slot = done;
            }
        }
        Ok(ops
            .iter()
            .zip(results)
            .map(|(op, r)| {
                r.unwrap_or_else(|| {
                    OpResult::Failed(format!(
                        "kept until the Secrets replacing it in namespace {} are written",
                        op.target().namespace
                    ))
                })
            })
            .collect())
    }

    /// Runs the ops `chosen` picks, pipelined; `None` for the others.
    async fn run_some(
        &self,
        ops: &[SecretOp],
        render: &(dyn Fn(&SecretTarget) -> Secret + Sync),
        chosen: impl Fn(&SecretOp) -> bool,
    ) -> Result<Vec<Option<OpResult>>, Error> {
        let concurrency = self.ctx.settings.write_concurrency.max(1);
        // Indices, not borrowing iterator adapters: what is held across the awaits stays
        // plainly `Send` (closures over references trip the compiler's inference there).
        let picked: Vec<usize> = (0..ops.len()).filter(|&i| chosen(&ops[i])).collect();
        let done = pipelined(picked, concurrency, |i| {
            self.one(&ops[i], render).map(move |r| (i, r))
        })
        .await;
        let mut results: Vec<Option<OpResult>> = vec![None; ops.len()];
        for (i, r) in done {
            results[i] = Some(r?);
        }
        Ok(results)
    }

    async fn one(
        &self,
        op: &SecretOp,
        render: &(dyn Fn(&SecretTarget) -> Secret + Sync),
    ) -> Result<OpResult, Error> {
        let t = op.target();
        let mut throttled = 0;
        loop {
            let (verb, built, previous) = self.request(op, render)?;
            // A place in the operator-wide write window (see `throttle`).
            let permit = self.ctx.writes.acquire().await;
            let result = k8s_write(
                self.ctx,
                "Secret",
                &t.namespace,
                &t.name,
                verb,
                send_quietly(self.ctx, built),
            )
            .await?;
            let signal = throttle_signal(&result);
            permit.finish(signal);
            self.ctx.metrics.set_write_window(self.ctx.writes.limit());
            if let Signal::Throttled { retry_after } = signal {
                self.ctx.metrics.write_throttled("429");
                // A 429 means the server did not run the request: sending it again is safe.
                if throttled < MAX_THROTTLED_RETRIES {
                    throttled += 1;
                    tracing::debug!(secret = %t, ?retry_after, "throttled; writing again after Retry-After");
                    continue;
                }
            } else if signal == Signal::Overloaded {
                self.ctx.metrics.write_throttled("5xx");
            }
            return Ok(self.settle_one(op, result, previous));
        }
    }

    /// The request carrying out `op`: (verb, request, resourceVersion it was made from).
    fn request(
        &self,
        op: &SecretOp,
        render: &(dyn Fn(&SecretTarget) -> Secret + Sync),
    ) -> Result<Built, Error> {
        let t = op.target();
        let request = Request::new(secrets_path(&t.namespace));
        let (verb, built, previous) = match op {
            SecretOp::Create(_) => {
                let body = serde_json::to_vec(&render(t)).map_err(Error::Encode)?;
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..Default::default()
                };
                ("create", request.create(&pp, body), None)
            }
            SecretOp::Update {
                uid,
                resource_version,
                ..
            } => {
                let patch = secret::update_patch(&render(t), uid, resource_version);
                let pp = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..Default::default()
                };
                (
                    "patch",
                    request.patch(&t.name, &pp, &Patch::Merge(&patch)),
                    Some(resource_version.clone()),
                )
            }
            SecretOp::Delete {
                uid,
                resource_version,
                ..
            } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: Some(resource_version.clone()),
                    }),
                    ..Default::default()
                };
                ("delete", request.delete(&t.name, &dp), None)
            }
        };
        let built = built.map_err(|e| Error::Request(e.to_string()))?;
        Ok((verb, built, previous))
    }

    fn settle_one(
        &self,
        op: &SecretOp,
        result: Result<PartialObjectMeta<Secret>, kube::Error>,
        previous: Option<String>,
    ) -> OpResult {
        let t = op.target();
        let memory = &self.ctx.memory;
        match (op, result) {
            (SecretOp::Delete { .. }, Ok(_)) => {
                memory.forget_secret(t);
                tracing::info!(secret = %t, "removed a Secret no longer targeted");
                done()
            }
            (SecretOp::Delete { .. }, Err(kube::Error::Api(s))) if s.code == 404 => {
                memory.forget_secret(t);
                done()
            }
            // A delete answer that could not be decoded still means the delete happened.
            (SecretOp::Delete { .. }, Err(kube::Error::SerdeError(_))) => {
                memory.forget_secret(t);
                done()
            }
            (_, Ok(written)) => {
                let meta = &written.metadata;
                let annotations = meta.annotations.as_ref();
                let annotation = |k: &str| annotations.and_then(|a| a.get(k));
                let record = Written::new(
                    &self.owner.uid,
                    meta.uid.as_deref().unwrap_or_default(),
                    meta.resource_version.as_deref().unwrap_or_default(),
                )
                .previous(previous.as_deref())
                .holding(
                    annotation(secret::DATA_HASH_ANNOTATION).map(String::as_str),
                    annotation(secret::EXPIRES_AT_ANNOTATION).and_then(|v| v.parse().ok()),
                )
                .at(Some(std::time::Instant::now()));
                let result = OpResult::Done {
                    uid: record.uid.to_string(),
                    resource_version: record.resource_version.to_string(),
                };
                memory.record(t.clone(), record);
                result
            }
            (SecretOp::Create(_), Err(kube::Error::Api(s))) if s.code == 409 => OpResult::Exists,
            (_, Err(kube::Error::Api(s)))
                if s.code == 409
                    || s.code == 404
                    || (s.code == 422 && s.message.contains("metadata.uid")) =>
            {
                OpResult::Changed
            }
            (_, Err(kube::Error::SerdeError(_))) => {
                // Written, but the answer is unreadable: the next watch event tells the rest.
                memory.forget_secret(t);
                done()
            }
            (_, Err(error)) => {
                tracing::warn!(secret = %t, error = %describe(&error), "Secret write failed");
                OpResult::Failed(describe(&error))
            }
        }
    }

    /// The resource's own Secret with its data (one GET, only to seed the held token after
    /// a restart), decoded here so that no answer is ever logged.
    pub async fn get_with_data(&self, target: &SecretTarget) -> Result<Option<Secret>, Error> {
        let request = Request::new(secrets_path(&target.namespace))
            .get(&target.name, &Default::default())
            .map_err(|e| Error::Request(e.to_string()))?;
        match self.ctx.client.request_text(request).await {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                // serde_json's message may quote the value it choked on (this answer holds
                // the token): only its class and position are kept.
                .map_err(|e| {
                    Error::Decode(format!(
                        "Secret {target}: not a Secret ({:?} error at line {} column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    ))
                }),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(source) => Err(Error::ReadSecret {
                target: target.to_string(),
                source,
            }),
        }
    }
}

fn done() -> OpResult {
    OpResult::Done {
        uid: String::new(),
        resource_version: String::new(),
    }
}

/// Applies ServiceAccount changes: a merge patch of the whole (atomic) `imagePullSecrets`
/// list and the annotation recording what the operator added, preconditioned on the
/// resourceVersion the change was computed from (a 409 means someone changed the
/// ServiceAccount meanwhile: computed again next time). Pipelined like Secret writes (at
/// most `controller.write_concurrency` at once, inside the operator-wide write window).
/// Returns the failures as (namespace, message), ordered by namespace.
///
/// # Errors
/// [`Error::Fenced`] once the fence closes.
pub(super) async fn pull_secrets(
    ctx: &Context,
    ops: &[PullSecretsOp],
) -> Result<Vec<(String, String)>, Error> {
    let concurrency = ctx.settings.write_concurrency.max(1);
    let done = pipelined(0..ops.len(), concurrency, |i| {
        pull_secrets_one(ctx, &ops[i])
    })
    .await;
    let mut failures = Vec::new();
    for r in done {
        failures.extend(r?);
    }
    failures.sort();
    Ok(failures)
}

/// One ServiceAccount patch of [`pull_secrets`]: `Some((namespace, message))` when it failed.
async fn pull_secrets_one(
    ctx: &Context,
    op: &PullSecretsOp,
) -> Result<Option<(String, String)>, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &op.namespace);
    let annotation = if op.added.is_empty() {
        serde_json::Value::Null
    } else {
        json!(serde_json::to_string(&op.added).unwrap_or_default())
    };
    let list: Vec<serde_json::Value> = op.pull_secrets.iter().map(|n| json!({"name": n})).collect();
    let patch = json!({
        "metadata": {
            "resourceVersion": op.resource_version,
            "annotations": {PULL_SECRETS_ANNOTATION: annotation},
        },
        "imagePullSecrets": list,
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let permit = ctx.writes.acquire().await;
    let result = k8s_write(
        ctx,
        "ServiceAccount",
        &op.namespace,
        &op.service_account,
        "patch",
        api.patch(&op.service_account, &pp, &Patch::Merge(&patch)),
    )
    .await?;
    permit.finish(throttle_signal(&result));
    Ok(match result {
        Ok(_) => {
            tracing::info!(namespace = %op.namespace, service_account = %op.service_account, "imagePullSecrets updated");
            None
        }
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(error) => {
            tracing::warn!(namespace = %op.namespace, service_account = %op.service_account, error = %describe(&error), "cannot update imagePullSecrets");
            Some((
                op.namespace.clone(),
                format!(
                    "cannot update the imagePullSecrets of ServiceAccount {}/{}: {}",
                    op.namespace,
                    op.service_account,
                    describe(&error)
                ),
            ))
        }
    })
}

/// The record, on a ServiceAccount, of the `imagePullSecrets` entries the operator added:
/// Secret name → uid of the resource it was added for. An unreadable record reads as empty.
pub fn added_pull_secrets(sa: &ServiceAccount) -> BTreeMap<String, String> {
    sa.annotations()
        .get(PULL_SECRETS_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Which part of a resource [`patch_resource`] writes.
#[derive(Clone, Copy)]
enum Part {
    Status,
    Metadata,
}

/// A merge patch of `cr` or its status subresource, in a `k8s.write` span.
async fn patch_resource(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    part: Part,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let namespace = cr.namespace().unwrap_or_default();
    let api: Api<ECRTokenRefresh> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = cr.name_any();
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let written = match part {
        Part::Status => {
            let write = api.patch_status(&name, &pp, &patch);
            k8s_write(
                ctx,
                "ECRTokenRefresh/status",
                &namespace,
                &name,
                "patch",
                write,
            )
            .await?
        }
        Part::Metadata => {
            let write = api.patch(&name, &pp, &patch);
            k8s_write(ctx, "ECRTokenRefresh", &namespace, &name, "patch", write).await?
        }
    };
    let target = format!("{namespace}/{name}");
    written.map(|_| ()).map_err(|source| match part {
        Part::Status => Error::WriteStatus { target, source },
        Part::Metadata => Error::WriteMetadata { target, source },
    })
}

/// Writes the status subresource (merge patch).
///
/// # Errors
/// [`Error::WriteStatus`] when the API refuses, [`Error::Fenced`] once the fence closes.
pub(super) async fn patch_status(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    patch: serde_json::Value,
) -> Result<(), Error> {
    patch_resource(ctx, cr, Part::Status, patch).await
}

/// Sets `metadata.finalizers` of `cr` (merge patch with its resourceVersion as the
/// precondition, so a finalizer another controller added meanwhile is never dropped: 409
/// instead, and the controller retries).
///
/// # Errors
/// [`Error::WriteMetadata`], [`Error::Fenced`].
pub(super) async fn set_finalizers(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": cr.resource_version()}});
    patch_resource(ctx, cr, Part::Metadata, patch).await
}

/// Publishes an Event on `cr` (failures are logged: an Event is never worth failing for).
pub(super) async fn event(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    warning: bool,
    reason: &str,
    note: &str,
    action: &str,
) {
    if ctx.fence.is_closed() {
        return;
    }
    let regarding = cr.object_ref(&());
    let namespace = cr.namespace().unwrap_or_default();
    let published = k8s_write(
        ctx,
        "Event",
        &namespace,
        &cr.name_any(),
        "create",
        ctx.events
            .publish(&regarding, warning, reason, note, action),
    )
    .await;
    if let Ok(Err(error)) = published {
        tracing::warn!(error = %describe(&error), reason, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::pipelined;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// At most `limit` futures exist at once, a new one starts as soon as one ends (not
    /// after a whole batch), and every item gets its output.
    #[tokio::test]
    async fn pipelined_keeps_limit_running_and_starts_one_as_each_ends() {
        let (alive, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let started = std::sync::Mutex::new(Vec::new());
        let out = pipelined(0..100usize, 4, |i| {
            let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            started.lock().unwrap().push(i);
            let alive = &alive;
            async move {
                // Item 0 is slow: a batching writer would hold items 4.. until it ends.
                let yields = if i == 0 { 50 } else { 1 };
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                alive.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .await;
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 4);
        // Everything else finished while item 0 was still running.
        assert_eq!(out.last(), Some(&0));
        assert_eq!(started.lock().unwrap().len(), 100);
    }
}
