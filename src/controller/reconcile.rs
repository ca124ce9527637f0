//! One reconcile of one `ECRTokenRefresh`.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::schedule::{self, until};
use super::status::{self, reason};
use super::{Context, Error, cleanup, targets};
use crate::api::{
    ECRTokenRefresh, ECRTokenRefreshStatus, NamespaceFailure, SecretReference, ValidSpec,
};
use crate::ecr::{EcrError, TokenRequest};
use crate::policy::{CrInfo, Failure, PolicyError, PolicySelection, RetryDecision};
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
/// 2. ask the policies where the Secrets go (namespaces, then a name in each);
/// 3. look at each target: a foreign Secret is never overwritten (`SecretConflict`);
/// 4. if every Secret is intact and the token is not due, only schedule the next refresh
///    (so a restart does not refresh every resource);
/// 5. otherwise get a token (or, when the token is not due, copy it from an intact
///    Secret of ours), apply the Secrets, remove the ones no longer targeted, and record
///    the expiry in status;
/// 6. on a token-source failure keep every Secret as it is, set `Ready=False` with the
///    failure's reason, and retry when the retry policy says, before the current token
///    expires.
///
/// # Errors
/// [`Error`] when a Kubernetes API call fails; the controller retries with backoff.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(namespace = cr.namespace().as_deref().unwrap_or(""), name = %cr.name_any(), generation = cr.meta().generation, outcome = tracing::field::Empty)
)]
pub async fn reconcile(cr: Arc<ECRTokenRefresh>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cr
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(cr.name_any()))?;
    if let Some(caches) = &ctx.caches {
        caches.ready().await?;
    }
    if cr.meta().deletion_timestamp.is_some() {
        outcome("deleting");
        ctx.metrics.forget(&namespace, &cr.name_any());
        if cleanup::has_finalizer(&cr) {
            cleanup::remove_copies(&ctx, &cr).await?;
            cleanup::remove_finalizer(&ctx, &cr).await?;
        }
        return Ok(Action::await_change());
    }
    // Whole seconds: status times are RFC 3339 seconds anyway, and messages stay readable.
    let now = Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| Timestamp::now());
    let key = ObjectRef::from_obj(cr.as_ref());
    let r = Reconciler {
        cr: &cr,
        ctx: &ctx,
        namespace,
        now,
        key,
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
    let info = cr_info(&cr, &spec);
    let selection = selection(&cr);
    if let Err(e) = ctx.policies.check_selection(&selection) {
        outcome("policy_failed");
        r.policy_failed(&e, None).await?;
        return Ok(Action::await_change());
    }

    let targets = match r.targets(&selection, &info).await {
        Ok(targets) => targets,
        Err(e) => {
            let delay = ctx.retry_delay(ctx.bump_failures(&r.key), r.expires_in());
            outcome("policy_failed");
            r.policy_failed(&e, Some(delay)).await?;
            return Ok(Action::requeue(delay));
        }
    };
    let stale = r.stale(&targets);
    if targets
        .iter()
        .chain(&stale)
        .any(|t| t.namespace != r.namespace)
        && !cleanup::has_finalizer(&cr)
    {
        // Copies outside the resource's namespace cannot be owned by it: the finalizer
        // lets the operator remove them when the resource is deleted.
        cleanup::add_finalizer(&ctx, &cr).await?;
    }
    if targets.is_empty() {
        let left = r.prune(&stale).await;
        let mut message =
            "the fan-out policy selected no namespace; no Secret is written".to_string();
        if !ctx.settings.fanout_sources.contains(&r.namespace) {
            message.push_str(&format!(
                " (this resource may only write into its own namespace {:?}: the operator's \
                 fanout.allowed_source_namespaces does not list it)",
                r.namespace
            ));
        }
        r.not_ready(reason::NO_NAMESPACE_SELECTED, &message, None)
            .await?;
        outcome("no_namespace");
        return Ok(if left.is_empty() {
            Action::await_change()
        } else {
            Action::requeue(ctx.settings.conflict_recheck)
        });
    }
    let observed = r.observe(targets).await?;
    let conflicts: Vec<&SecretTarget> = observed
        .iter()
        .filter(|o| o.ownership == Ownership::Foreign)
        .map(|o| &o.target)
        .collect();
    let writable: Vec<&Observed> = observed
        .iter()
        .filter(|o| o.ownership != Ownership::Foreign)
        .collect();
    let conflict_message = (!conflicts.is_empty()).then(|| {
        let list: Vec<String> = conflicts.iter().take(10).map(|t| t.to_string()).collect();
        let more = conflicts.len().saturating_sub(list.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "Secret {}{more} exists and is not managed by ecr-token-refresh for this resource; \
             it is left untouched. Delete or rename it to let the operator write the pull Secret \
             (looked at again every {}s)",
            list.join(", "),
            ctx.settings.conflict_recheck.as_secs()
        )
    });
    let served: Vec<&SecretTarget> = writable.iter().map(|o| &o.target).collect();
    let missing_sa = r.missing_pull_secrets(&served);
    if writable.is_empty() {
        let message = conflict_message.unwrap_or_else(|| "no namespace selected".to_string());
        r.not_ready(reason::SECRET_CONFLICT, &message, None).await?;
        outcome("secret_conflict");
        return Ok(Action::requeue(ctx.settings.conflict_recheck));
    }

    let due = r.scheduled_refresh(&spec);
    let fresh = due.is_some_and(|due| r.now < due);
    if fresh
        && writable.iter().all(|o| o.intact)
        && conflicts.is_empty()
        && stale.is_empty()
        && missing_sa.is_empty()
    {
        let due = due.unwrap_or(r.now);
        tracing::debug!(%due, "token still fresh; nothing to write");
        outcome("up_to_date");
        return Ok(Action::requeue(until(r.now, due)));
    }

    // The token: copied from an intact Secret of ours while it is not due, else from ECR.
    let reused = fresh
        .then(|| {
            writable
                .iter()
                .filter(|o| o.intact)
                .find_map(|o| o.existing.as_ref().and_then(secret::reusable_data))
        })
        .flatten();
    let (data, expires_at, fetched) = match reused {
        Some((data, expires_at)) => (data, expires_at, false),
        None => {
            let request = TokenRequest {
                region: spec.registry.region.clone(),
                registry_id: spec.registry.account_id.clone(),
                fips: spec.registry.fips,
            };
            match ctx.tokens.authorization_token(&request).await {
                Ok(token) => {
                    ctx.metrics.ecr_call("success");
                    let data = secret::docker_config_json(&spec.registry.host, &token);
                    (data, token.expires_at, true)
                }
                Err(e) => {
                    ctx.metrics.ecr_call(e.kind.label());
                    outcome("token_failed");
                    return r.token_failed(&selection, &info, &e).await;
                }
            }
        }
    };

    // Write what is missing, changed, or due; Secrets already holding this data are skipped.
    let to_write: Vec<&Observed> = writable
        .iter()
        .copied()
        .filter(|o| fetched || !o.intact)
        .collect();
    if let Err(message) = r.write_all(&to_write, &data, expires_at).await {
        let delay = ctx.retry_delay(ctx.bump_failures(&r.key), r.expires_in());
        r.not_ready(reason::SECRET_WRITE_FAILED, &message, Some(delay))
            .await?;
        outcome("secret_write_failed");
        return Ok(Action::requeue(delay));
    }
    r.add_pull_secrets(&missing_sa).await;
    let mut current: Vec<SecretReference> = writable.iter().map(|o| o.target.reference()).collect();
    current.extend(r.prune(&stale).await.iter().map(SecretTarget::reference));
    ctx.clear_failures(&r.key);

    let last_updated = if fetched {
        r.now
    } else {
        r.status().last_updated_time.map(|t| t.0).unwrap_or(r.now)
    };
    let next = schedule::next_refresh(
        last_updated,
        spec.frequency,
        expires_at,
        &ctx.settings.schedule,
    );
    outcome(if to_write.is_empty() {
        "up_to_date"
    } else {
        "refreshed"
    });
    let failed: Vec<NamespaceFailure> = conflicts
        .iter()
        .map(|t| NamespaceFailure {
            namespace: t.namespace.clone(),
            reason: reason::SECRET_CONFLICT.to_string(),
            message: format!(
                "Secret {t} exists and is not managed by ecr-token-refresh for this resource"
            ),
        })
        .collect();
    r.succeeded(
        &to_write,
        current,
        writable.len(),
        failed,
        expires_at,
        last_updated,
        next,
        fetched,
        conflict_message,
    )
    .await?;
    let next = if conflicts.is_empty() {
        next
    } else {
        next.min(r.now + ctx.settings.conflict_recheck)
    };
    Ok(Action::requeue(until(r.now, next)))
}

/// What the plugins see of a resource (never the token).
fn cr_info(cr: &ECRTokenRefresh, spec: &ValidSpec) -> CrInfo {
    CrInfo {
        name: cr.name_any(),
        namespace: cr.namespace().unwrap_or_default(),
        labels: cr.labels().clone(),
        annotations: cr.annotations().clone(),
        registry: spec.registry.host.clone(),
        account_id: spec.registry.account_id.clone(),
        region: spec.registry.region.clone(),
        parameters: cr
            .spec
            .policy
            .as_ref()
            .map(|p| p.parameters.clone())
            .unwrap_or_default(),
    }
}

/// The plugins a resource selects (`None`: built-in).
fn selection(cr: &ECRTokenRefresh) -> PolicySelection {
    let p = cr.spec.policy.clone().unwrap_or_default();
    PolicySelection {
        naming: p.naming,
        fanout: p.fanout,
        retry: p.retry,
    }
}

/// One target and what is there now.
struct Observed {
    target: SecretTarget,
    existing: Option<Secret>,
    ownership: Ownership,
    intact: bool,
}

impl SecretTarget {
    fn reference(&self) -> SecretReference {
        SecretReference {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

struct Reconciler<'a> {
    cr: &'a ECRTokenRefresh,
    ctx: &'a Context,
    namespace: String,
    now: Timestamp,
    key: ObjectRef<ECRTokenRefresh>,
}

impl Reconciler<'_> {
    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), namespace)
    }

    fn status(&self) -> ECRTokenRefreshStatus {
        self.cr.status.clone().unwrap_or_default()
    }

    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.cr.name_any())
    }

    /// Time left on the token now in the Secrets, per status; `None` if unknown or past.
    fn expires_in(&self) -> Option<Duration> {
        self.status()
            .expires_at
            .map(|t| until(self.now, t.0))
            .filter(|d| !d.is_zero())
    }

    /// The Secrets this resource should have: the resource's own namespace (fan-out is
    /// the next step), each with the name the naming policy gives.
    async fn targets(
        &self,
        selection: &PolicySelection,
        info: &CrInfo,
    ) -> Result<Vec<SecretTarget>, PolicyError> {
        let policies = &self.ctx.policies;
        let namespaces = if policies.needs_candidates(selection) {
            let cached = self
                .ctx
                .caches
                .as_ref()
                .and_then(|c| c.namespaces.as_ref())
                .map(|s| s.state());
            let (candidates, allowed) = targets::candidates(
                &self.namespace,
                cached.as_deref(),
                &self.ctx.settings.fanout_sources,
            );
            policies
                .select_namespaces(selection, info, &candidates, &allowed)
                .await?
        } else {
            vec![self.namespace.clone()]
        };
        let mut targets = Vec::with_capacity(namespaces.len());
        for namespace in namespaces {
            let name = policies.secret_name(selection, info, &namespace).await?;
            targets.push(SecretTarget { namespace, name });
        }
        Ok(targets)
    }

    /// Our Secrets (per the managed-Secret cache) that are no longer targeted.
    fn stale(&self, targets: &[SecretTarget]) -> Vec<SecretTarget> {
        let Some(caches) = &self.ctx.caches else {
            // Without caches, what status lists is what we wrote.
            let current: Vec<SecretReference> =
                targets.iter().map(SecretTarget::reference).collect();
            return self
                .status()
                .secrets
                .into_iter()
                .filter(|s| !current.contains(s))
                .map(|s| SecretTarget {
                    namespace: s.namespace,
                    name: s.name,
                })
                .collect();
        };
        let cached = caches.secrets.state();
        targets::stale(cached.iter().map(|s| s.as_ref()), self.cr, targets)
    }

    /// ServiceAccounts named in the spec that exist in a served namespace but do not list
    /// the Secret yet.
    fn missing_pull_secrets(&self, served: &[&SecretTarget]) -> Vec<(String, String, String)> {
        let names = &self.cr.spec.service_accounts;
        let Some(caches) = self.ctx.caches.as_ref().filter(|_| !names.is_empty()) else {
            return Vec::new();
        };
        let wanted: BTreeSet<&str> = served.iter().map(|t| t.namespace.as_str()).collect();
        let existing: BTreeMap<(String, String), ServiceAccount> = caches
            .service_accounts
            .state()
            .iter()
            .filter(|sa| {
                names.contains(&sa.name_any())
                    && sa.namespace().is_some_and(|n| wanted.contains(n.as_str()))
            })
            .map(|sa| {
                (
                    (sa.namespace().unwrap_or_default(), sa.name_any()),
                    sa.as_ref().clone(),
                )
            })
            .collect();
        targets::missing_pull_secrets(served, names, &existing)
    }

    /// Adds the Secret to `imagePullSecrets` of each ServiceAccount, with a strategic
    /// merge patch: the list is merged by name, so entries others put there stay.
    /// Failures are logged; the next reconcile tries again.
    async fn add_pull_secrets(&self, missing: &[(String, String, String)]) {
        for (namespace, sa, secret_name) in missing {
            let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), namespace);
            let patch = serde_json::json!({"imagePullSecrets": [{"name": secret_name}]});
            let pp = PatchParams::default();
            let result = k8s_write(
                "ServiceAccount",
                namespace,
                sa,
                "patch",
                api.patch(sa, &pp, &Patch::Strategic(&patch)),
            )
            .await;
            match result {
                Ok(_) => {
                    tracing::info!(%namespace, service_account = %sa, secret = %secret_name, "added to imagePullSecrets")
                }
                Err(error) => {
                    tracing::warn!(%namespace, service_account = %sa, %error, "cannot add to imagePullSecrets")
                }
            }
        }
    }

    /// Reads each target Secret (a foreign one must be seen to be left alone), a bounded
    /// number at once.
    async fn observe(&self, targets: Vec<SecretTarget>) -> Result<Vec<Observed>, Error> {
        let reads: Vec<_> = targets.into_iter().map(|t| self.observe_one(t)).collect();
        futures::stream::iter(reads)
            .buffered(self.ctx.settings.write_concurrency.max(1))
            .try_collect()
            .await
    }

    async fn observe_one(&self, target: SecretTarget) -> Result<Observed, Error> {
        // A Secret of ours is in the managed-Secret cache; one that is not may be absent
        // or someone else's, which only the API server knows.
        let cached = self.ctx.caches.as_ref().and_then(|c| {
            c.secrets
                .get(&ObjectRef::new(&target.name).within(&target.namespace))
                .map(|s| s.as_ref().clone())
        });
        let existing = match cached {
            Some(secret) => Some(secret),
            None => self
                .secrets(&target.namespace)
                .get_opt(&target.name)
                .await
                .map_err(|source| Error::ReadSecret {
                    target: target.to_string(),
                    source,
                })?,
        };
        let ownership = secret::ownership(existing.as_ref(), self.cr);
        let intact = ownership == Ownership::Ours
            && existing
                .as_ref()
                .is_some_and(|s| secret::is_intact(s, self.cr, &self.cr.spec.ecr_registry));
        Ok(Observed {
            target,
            existing,
            ownership,
            intact,
        })
    }

    /// Applies the Secret at every target in `to_write`, a bounded number at once.
    ///
    /// # Errors
    /// A message naming the Secrets that could not be written.
    async fn write_all(
        &self,
        to_write: &[&Observed],
        data: &[u8],
        expires_at: Timestamp,
    ) -> Result<(), String> {
        let writes: Vec<_> = to_write
            .iter()
            .map(|o| self.write_one(&o.target, data, expires_at))
            .collect();
        let results: Vec<Result<(), String>> = futures::stream::iter(writes)
            .buffer_unordered(self.ctx.settings.write_concurrency.max(1))
            .collect()
            .await;
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    async fn write_one(
        &self,
        target: &SecretTarget,
        data: &[u8],
        expires_at: Timestamp,
    ) -> Result<(), String> {
        let rendered = secret::render_data(self.cr, target, data.to_vec(), expires_at);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self.secrets(&target.namespace);
        k8s_write(
            "Secret",
            &target.namespace,
            &target.name,
            "apply",
            api.patch(&target.name, &params, &Patch::Apply(&rendered)),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot write Secret {target}: {e}"))
    }

    /// Deletes `stale` Secrets (ours, no longer targeted) and their entries in the named
    /// ServiceAccounts' `imagePullSecrets`. Returns those that could not be removed:
    /// status keeps listing them, so a later reconcile tries again.
    async fn prune(&self, stale: &[SecretTarget]) -> Vec<SecretTarget> {
        let mut left = Vec::new();
        for old in stale {
            let api = self.secrets(&old.namespace);
            if self.ctx.caches.is_none() {
                // Known from status only: make sure it is still ours.
                match api.get_opt(&old.name).await {
                    Ok(existing)
                        if secret::ownership(existing.as_ref(), self.cr) == Ownership::Ours => {}
                    Ok(_) => continue,
                    Err(error) => {
                        tracing::warn!(secret = %old, %error, "cannot read a Secret no longer targeted");
                        left.push(old.clone());
                        continue;
                    }
                }
            }
            self.remove_pull_secret(old).await;
            let dp = DeleteParams::default();
            match k8s_write(
                "Secret",
                &old.namespace,
                &old.name,
                "delete",
                api.delete(&old.name, &dp),
            )
            .await
            {
                Ok(_) => tracing::info!(secret = %old, "removed a Secret no longer targeted"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => {
                    tracing::warn!(secret = %old, %error, "cannot remove a Secret no longer targeted");
                    left.push(old.clone());
                }
            }
        }
        left
    }

    /// Removes our entry (the Secret's name) from the `imagePullSecrets` of the named
    /// ServiceAccounts in the Secret's namespace, leaving every other entry.
    async fn remove_pull_secret(&self, old: &SecretTarget) {
        let names = &self.cr.spec.service_accounts;
        let Some(caches) = self.ctx.caches.as_ref().filter(|_| !names.is_empty()) else {
            return;
        };
        for sa in caches.service_accounts.state() {
            let listed = sa
                .image_pull_secrets
                .as_ref()
                .is_some_and(|l| l.iter().any(|r| r.name == old.name));
            if !listed
                || !names.contains(&sa.name_any())
                || sa.namespace().as_deref() != Some(old.namespace.as_str())
            {
                continue;
            }
            let name = sa.name_any();
            let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &old.namespace);
            let patch =
                serde_json::json!({"imagePullSecrets": [{"name": old.name, "$patch": "delete"}]});
            let pp = PatchParams::default();
            if let Err(error) = k8s_write(
                "ServiceAccount",
                &old.namespace,
                &name,
                "patch",
                api.patch(&name, &pp, &Patch::Strategic(&patch)),
            )
            .await
            {
                tracing::warn!(namespace = %old.namespace, service_account = %name, %error, "cannot remove from imagePullSecrets");
            }
        }
    }

    /// When the token now in the Secrets is due for refresh, read back from status, so
    /// that a restart does not refresh fresh tokens. `None` when status does not describe
    /// a successful refresh of the current generation.
    fn scheduled_refresh(&self, spec: &ValidSpec) -> Option<Timestamp> {
        let status = self.status();
        let refreshed = status::is_ready(&status)
            || status::ready(&status)
                .is_some_and(|c| c.reason == reason::SECRET_CONFLICT && !status.secrets.is_empty());
        if !refreshed || status.observed_generation != self.cr.meta().generation {
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
            target: self.name(),
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

    /// A policy (plugin) failed: `Ready=False` with reason `PolicyFailed` and the error,
    /// which names the plugin and hook.
    async fn policy_failed(
        &self,
        e: &PolicyError,
        retry_in: Option<Duration>,
    ) -> Result<(), Error> {
        tracing::warn!(plugin = e.plugin(), hook = %e.hook(), reason = e.metric_label(), "policy failed");
        let mut message = e.to_string();
        if let Some(d) = retry_in {
            message.push_str(&format!("; retrying in {}s", d.as_secs().max(1)));
        }
        self.not_ready(reason::POLICY_FAILED, &message, retry_in)
            .await
    }

    /// ECR failed: keep the Secrets, ask the retry policy when to try again.
    async fn token_failed(
        &self,
        selection: &PolicySelection,
        info: &CrInfo,
        e: &EcrError,
    ) -> Result<Action, Error> {
        let attempt = self.ctx.bump_failures(&self.key);
        let expires_in = self.expires_in();
        let failure = Failure {
            kind: e.kind,
            message: e.to_string(),
            attempt,
        };
        let (decision, plugin_note) = match self
            .ctx
            .policies
            .decide_retry(selection, info, &failure, expires_in)
            .await
        {
            Ok(decision) => (decision, String::new()),
            Err(pe) => {
                tracing::warn!(
                    plugin = pe.plugin(),
                    reason = pe.metric_label(),
                    "retry policy failed; using the built-in backoff"
                );
                self.event(
                    EventType::Warning,
                    reason::POLICY_FAILED,
                    format!("{pe}; using the built-in backoff"),
                    "Retry",
                )
                .await;
                let delay = self.ctx.retry_delay(attempt, expires_in);
                (
                    RetryDecision::RetryAfter(delay),
                    format!(" ({pe}; built-in backoff used)"),
                )
            }
        };
        let kept = match self.status().expires_at {
            Some(t) => format!(
                "the Secrets are kept as they are (their token expires at {})",
                t.0
            ),
            None => "no Secret is written until a token is obtained".to_string(),
        };
        match decision {
            RetryDecision::RetryAfter(delay) => {
                let message = format!(
                    "{e}; {kept}; attempt {attempt}, next in {}s{plugin_note}",
                    delay.as_secs().max(1)
                );
                self.not_ready(e.kind.reason(), &message, Some(delay))
                    .await?;
                Ok(Action::requeue(delay))
            }
            RetryDecision::GiveUp { reason } => {
                let message = format!(
                    "{e}; {kept}; attempt {attempt}; the retry policy gave up ({reason}): \
                     edit the resource to try again"
                );
                self.not_ready(e.kind.reason(), &message, None).await?;
                Ok(Action::await_change())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn succeeded(
        &self,
        written: &[&Observed],
        secrets: Vec<SecretReference>,
        served: usize,
        failed: Vec<NamespaceFailure>,
        expires_at: Timestamp,
        last_updated: Timestamp,
        next: Timestamp,
        fetched: bool,
        conflicts: Option<String>,
    ) -> Result<(), Error> {
        let settings = &self.ctx.settings.schedule;
        let places: Vec<String> = secrets
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        let what = if places.len() == 1 {
            format!("Secret {}", places[0])
        } else {
            format!("{} Secrets", places.len())
        };
        let mut message =
            format!("{what} hold a token that expires at {expires_at}; next refresh at {next}");
        if places.len() == 1 {
            message = message.replacen(" hold ", " holds ", 1);
        }
        if fetched && schedule::arrived_expired(self.now, expires_at, settings) {
            message.push_str(
                " (ECR reported an expiry already in the past: check the clock; refreshing at the minimum interval)",
            );
            tracing::warn!(%expires_at, "token arrived already expired");
        }
        let generation = self.cr.meta().generation;
        let previous = self.status();
        let patch = match &conflicts {
            None => status::success_patch(
                &previous,
                &message,
                generation,
                last_updated,
                expires_at,
                next,
                secrets,
            ),
            Some(conflict) => {
                let mut p = status::success_patch(
                    &previous,
                    &message,
                    generation,
                    last_updated,
                    expires_at,
                    next,
                    secrets,
                );
                let cond = status::ready_condition(
                    &previous.conditions,
                    false,
                    reason::SECRET_CONFLICT,
                    conflict,
                    generation,
                    self.now,
                );
                p["status"]["conditions"] = serde_json::json!([cond]);
                p["status"]["phase"] = serde_json::json!(crate::api::Phase::Failed);
                p["status"]["error"] = serde_json::json!(conflict);
                p
            }
        };
        let mut patch = patch;
        patch["status"]["servedNamespaces"] = serde_json::json!(served);
        patch["status"]["failedNamespaces"] = serde_json::json!(failed);
        self.patch_status(patch).await?;
        if let Some(conflict) = &conflicts {
            let unchanged = status::ready(&previous)
                .is_some_and(|c| c.reason == reason::SECRET_CONFLICT && &c.message == conflict);
            if !unchanged {
                self.event(
                    EventType::Warning,
                    reason::SECRET_CONFLICT,
                    conflict.clone(),
                    "Reconcile",
                )
                .await;
            }
        }
        self.ctx
            .metrics
            .token_expiry(&self.namespace, &self.cr.name_any(), expires_at);
        if written.is_empty() {
            return Ok(());
        }
        let created = written.iter().filter(|o| o.existing.is_none()).count();
        let repaired = written
            .iter()
            .filter(|o| o.existing.is_some() && !o.intact)
            .count();
        let (reason, verb) = if created > 0 {
            ("Created", "Created")
        } else if repaired > 0 {
            ("Repaired", "Rewrote changed")
        } else {
            ("Refreshed", "Refreshed the token in")
        };
        let names: Vec<String> = written
            .iter()
            .take(5)
            .map(|o| o.target.to_string())
            .collect();
        let more = written.len().saturating_sub(names.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let note = format!(
            "{verb} Secret {}{more}; the token expires at {expires_at}",
            names.join(", ")
        );
        tracing::info!(secrets = written.len(), created, repaired, %expires_at, %next, reason, "secrets written");
        for _ in written {
            self.ctx.metrics.secret_written(reason);
        }
        self.event(EventType::Normal, reason, note, "Refresh").await;
        Ok(())
    }
}
