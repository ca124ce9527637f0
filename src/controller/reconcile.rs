//! One reconcile of one `ECRTokenRefresh`.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::schedule::{self, until};
use super::status::{self, reason};
use super::{Context, Error};
use crate::api::{ECRTokenRefresh, SecretReference, ValidSpec};
use crate::ecr::{AuthorizationToken, EcrError, TokenRequest};
use crate::secret::{self, FIELD_MANAGER, Ownership, SecretTarget};

tokio::task_local! {
    /// What the current reconcile did, for the `reconciles` metric (set by [`outcome`]).
    static OUTCOME: Cell<&'static str>;
}

/// Records what this reconcile did: on the `reconcile` span and for the metrics.
fn outcome(what: &'static str) {
    tracing::Span::current().record("outcome", what);
    let _ = OUTCOME.try_with(|o| o.set(what));
}

/// [`reconcile`], counted and timed in `ctx.metrics` by outcome (`refreshed`,
/// `up_to_date`, `invalid_spec`, `secret_conflict`, `token_failed`,
/// `secret_write_failed`, `deleting`, or `error` when a Kubernetes call failed).
pub(super) async fn observed(cr: Arc<ECRTokenRefresh>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let metrics = Arc::clone(&ctx.metrics);
    let (result, what) = OUTCOME
        .scope(Cell::new("error"), async move {
            let result = reconcile(cr, ctx).await;
            (result, OUTCOME.with(Cell::get))
        })
        .await;
    let what = if result.is_err() { "error" } else { what };
    metrics.reconcile_done(what, started.elapsed());
    result
}

/// Runs one Kubernetes write inside a `k8s.write` span (kind, namespace, name, verb,
/// outcome: `success` or the HTTP status / error class).
async fn k8s_write<T, F>(
    kind: &str,
    namespace: &str,
    name: &str,
    verb: &str,
    write: F,
) -> Result<T, kube::Error>
where
    F: std::future::Future<Output = Result<T, kube::Error>>,
{
    use tracing::Instrument as _;
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
    result
}

/// Reconciles one resource:
///
/// 1. validate the spec (a bad spec gets `Ready=False`/`InvalidSpec` and no AWS call);
/// 2. look at the target Secret: a foreign one is never overwritten (`SecretConflict`);
/// 3. if the Secret is intact and the token is not due, only schedule the next refresh
///    (so a restart does not refresh every resource);
/// 4. otherwise get a token, apply the Secret, and record the expiry in status;
/// 5. on a token-source failure keep the Secret as it is, set `Ready=False` with the
///    failure's reason, and retry with backoff, before the current token expires.
///
/// # Errors
/// [`Error`] when a Kubernetes API call fails; the controller retries with backoff.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(namespace = cr.namespace().as_deref().unwrap_or(""), name = %cr.name_any(), generation = cr.meta().generation, outcome = tracing::field::Empty)
)]
pub async fn reconcile(cr: Arc<ECRTokenRefresh>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(cr.as_ref());
    let namespace = cr
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(cr.name_any()))?;
    if cr.meta().deletion_timestamp.is_some() {
        outcome("deleting");
        ctx.metrics.forget(&namespace, &cr.name_any());
        return Ok(Action::await_change());
    }
    // Whole seconds: status times are RFC 3339 seconds anyway, and messages stay readable.
    let now = Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| Timestamp::now());
    let r = Reconciler {
        cr: &cr,
        ctx: &ctx,
        namespace,
        now,
    };

    let spec = match cr.spec.validate() {
        Ok(spec) => spec,
        Err(e) => {
            r.not_ready(reason::INVALID_SPEC, &e.to_string(), None)
                .await?;
            outcome("invalid_spec");
            return Ok(Action::await_change());
        }
    };

    let target = SecretTarget {
        namespace: r.namespace.clone(),
        name: cr.name_any(),
    };
    let existing = r
        .secrets()
        .get_opt(&target.name)
        .await
        .map_err(|source| Error::ReadSecret {
            target: target.to_string(),
            source,
        })?;
    let ownership = secret::ownership(existing.as_ref(), &cr);
    if ownership == Ownership::Foreign {
        let message = format!(
            "Secret {target} exists and is not managed by ecr-token-refresh for this resource; \
             it is left untouched. Delete or rename it to let the operator write the pull Secret"
        );
        r.not_ready(reason::SECRET_CONFLICT, &message, None).await?;
        outcome("secret_conflict");
        return Ok(Action::requeue(ctx.settings.conflict_recheck));
    }
    let intact = existing
        .as_ref()
        .is_some_and(|s| secret::is_intact(s, &cr, &spec.registry.host));

    if let Some(due) = r.scheduled_refresh(&spec).filter(|due| intact && r.now < *due) {
        tracing::debug!(%due, "token still fresh; nothing to write");
        outcome("up_to_date");
        return Ok(Action::requeue(until(r.now, due)));
    }

    let request = TokenRequest {
        region: spec.registry.region.clone(),
        registry_id: spec.registry.account_id.clone(),
    };
    let token = match ctx.tokens.authorization_token(&request).await {
        Ok(token) => {
            ctx.metrics.ecr_call("success");
            token
        }
        Err(e) => {
            ctx.metrics.ecr_call(e.kind.label());
            outcome("token_failed");
            return r.token_failed(&key, &e).await;
        }
    };

    let rendered = secret::render(&cr, &target, &spec.registry.host, &token);
    let secrets = r.secrets();
    let applied = k8s_write(
        "Secret",
        &target.namespace,
        &target.name,
        "apply",
        secrets.patch(
            &target.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&rendered),
        ),
    )
    .await;
    if let Err(e) = applied {
        let message = format!("cannot write Secret {target}: {e}");
        let delay = schedule::backoff(
            ctx.bump_failures(&key),
            &ctx.settings.schedule,
            &mut rand::rng(),
        );
        r.not_ready(reason::SECRET_WRITE_FAILED, &message, Some(delay))
            .await?;
        outcome("secret_write_failed");
        return Ok(Action::requeue(delay));
    }
    ctx.clear_failures(&key);
    r.succeeded(
        &spec,
        &token,
        &target,
        ownership,
        intact,
        existing.is_some(),
    )
    .await
}

struct Reconciler<'a> {
    cr: &'a ECRTokenRefresh,
    ctx: &'a Context,
    namespace: String,
    now: Timestamp,
}

impl Reconciler<'_> {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn status(&self) -> crate::api::ECRTokenRefreshStatus {
        self.cr.status.clone().unwrap_or_default()
    }

    fn target(&self) -> String {
        format!("{}/{}", self.namespace, self.cr.name_any())
    }

    /// When the token now in the Secret is due for refresh, read back from status, so
    /// that a restart does not refresh fresh tokens. `None` when status does not describe
    /// a successful refresh of the current generation.
    fn scheduled_refresh(&self, spec: &ValidSpec) -> Option<Timestamp> {
        let status = self.status();
        if !status::is_ready(&status) || status.observed_generation != self.cr.meta().generation {
            return None;
        }
        let (last, expires) = (status.last_updated_time?, status.expires_at?);
        Some(schedule::next_refresh(
            last.0,
            spec.frequency,
            expires.0,
            &self.ctx.settings.schedule,
        ))
    }

    async fn patch_status(&self, patch: serde_json::Value) -> Result<(), Error> {
        let api: Api<ECRTokenRefresh> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let name = self.cr.name_any();
        k8s_write(
            "ECRTokenRefresh/status",
            &self.namespace,
            &name,
            "patch",
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map(|_| ())
        .map_err(|source| Error::WriteStatus {
            target: self.target(),
            source,
        })
    }

    async fn event(&self, type_: EventType, reason: &str, note: String, action: &str) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        let regarding = self.cr.object_ref(&());
        let published = k8s_write(
            "Event",
            &self.namespace,
            &self.cr.name_any(),
            "create",
            self.ctx.recorder.publish(&event, &regarding),
        )
        .await;
        if let Err(error) = published {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// Sets `Ready=False`; publishes a Warning event when the reason or message changed
    /// (not on every retry of the same failure).
    async fn not_ready(
        &self,
        reason: &str,
        message: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), Error> {
        let previous = self.status();
        let unchanged = status::ready(&previous)
            .is_some_and(|c| c.status == "False" && c.reason == reason && c.message == message);
        let next_attempt = retry_in.and_then(|d| self.now.checked_add(d).ok());
        let patch = status::failure_patch(
            &previous,
            reason,
            message,
            self.cr.meta().generation,
            self.now,
            next_attempt,
        );
        self.patch_status(patch).await?;
        tracing::warn!(reason, message, "not ready");
        if !unchanged {
            self.event(EventType::Warning, reason, message.to_string(), "Reconcile")
                .await;
        }
        Ok(())
    }

    async fn token_failed(
        &self,
        key: &ObjectRef<ECRTokenRefresh>,
        e: &EcrError,
    ) -> Result<Action, Error> {
        let attempt = self.ctx.bump_failures(key);
        let expires_in = self
            .status()
            .expires_at
            .map(|t| until(self.now, t.0))
            .filter(|d| !d.is_zero());
        let delay = schedule::clamp_before_expiry(
            schedule::backoff(attempt, &self.ctx.settings.schedule, &mut rand::rng()),
            expires_in,
        );
        let kept = match self.status().expires_at {
            Some(t) => format!(
                "the Secret {} is kept as it is (its token expires at {})",
                self.target(),
                t.0
            ),
            None => "no Secret is written until a token is obtained".to_string(),
        };
        let message = format!(
            "{e}; {kept}; attempt {attempt}, next in {}s",
            delay.as_secs()
        );
        self.not_ready(e.kind.reason(), &message, Some(delay))
            .await?;
        Ok(Action::requeue(delay))
    }

    async fn succeeded(
        &self,
        spec: &ValidSpec,
        token: &AuthorizationToken,
        target: &SecretTarget,
        ownership: Ownership,
        intact: bool,
        existed: bool,
    ) -> Result<Action, Error> {
        let settings = &self.ctx.settings.schedule;
        let next = schedule::next_refresh(self.now, spec.frequency, token.expires_at, settings);
        let mut message = format!(
            "Secret {target} holds a token that expires at {}; next refresh at {next}",
            token.expires_at
        );
        if schedule::arrived_expired(self.now, token.expires_at, settings) {
            message.push_str(
                " (ECR reported an expiry already in the past: check the clock; refreshing at the minimum interval)",
            );
            tracing::warn!(expires_at = %token.expires_at, "token arrived already expired");
        }
        let secrets = vec![SecretReference {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        }];
        let patch = status::success_patch(
            &self.status(),
            &message,
            self.cr.meta().generation,
            self.now,
            token.expires_at,
            next,
            secrets,
        );
        self.patch_status(patch).await?;
        let (reason, note) = match (ownership, existed, intact) {
            (Ownership::Absent, _, _) | (_, false, _) => {
                ("Created", format!("Created Secret {target}"))
            }
            (_, true, false) => (
                "Repaired",
                format!("Rewrote Secret {target}, which had been changed"),
            ),
            _ => (
                "Refreshed",
                format!("Refreshed the token in Secret {target}"),
            ),
        };
        tracing::info!(secret = %target, expires_at = %token.expires_at, %next, reason, "secret written");
        self.ctx.metrics.secret_written(reason);
        self.ctx
            .metrics
            .token_expiry(&self.namespace, &self.cr.name_any(), token.expires_at);
        outcome("refreshed");
        self.event(
            EventType::Normal,
            reason,
            format!("{note}; it expires at {}", token.expires_at),
            "Refresh",
        )
        .await;
        Ok(Action::requeue(until(self.now, next)))
    }
}
