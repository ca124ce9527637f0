//! One reconcile of one `ECRTokenRefresh`: validate, ask the policies, gather, decide
//! ([`super::plan`]), get a token only when the plan needs one, do ([`super::apply`]),
//! settle ([`super::settle`]), and write the status only when it changed.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::apply::{self, SecretWriter};
use super::memory::{TokenFailure, Written};
use super::plan::{self, Found, Input, TokenNeed, TokenState};
use super::settle::{self, Outcome, Retry};
use super::status::{self, reason};
use super::{Context, Error, cleanup, observe, targets, verify};
use crate::api::{ECRTokenRefresh, ECRTokenRefreshStatus, Phase, ValidSpec};
use crate::ecr::{Credentials, EcrError, FailureKind, HeldToken, TokenRequest};
use crate::policy::{CrInfo, Failure, PolicyError, PolicySelection, RetryDecision};
use crate::secret::{self, Owner, SecretTarget};
use crate::secret_format::{Layout, Part};

tokio::task_local! {
    /// What the current reconcile did, for the `reconciles` metric (set by [`outcome`]).
    static OUTCOME: Cell<&'static str>;
    /// How many Secret targets the current reconcile gathered (a large one gives its freed
    /// memory back when it ends, see [`crate::heap`]).
    static TARGETS: Cell<usize>;
}

/// Records what this reconcile did: on the `reconcile` span and for the metrics.
fn outcome(what: &'static str) {
    tracing::Span::current().record("outcome", what);
    let _ = OUTCOME.try_with(|o| o.set(what));
}

/// [`reconcile`], counted and timed in `ctx.metrics` by outcome (`refreshed`,
/// `up_to_date`, `invalid_spec`, `not_permitted`, `policy_failed`, `no_namespace`,
/// `secret_conflict`, `token_failed`, `secret_write_failed`, `deleting`, or `error` when
/// a Kubernetes call failed).
pub(super) async fn observed(cr: Arc<ECRTokenRefresh>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let metrics = Arc::clone(&ctx.metrics);
    let (result, what, targets) = OUTCOME
        .scope(Cell::new("error"), async move {
            TARGETS
                .scope(Cell::new(0), async move {
                    let result = reconcile(cr, ctx).await;
                    (result, OUTCOME.with(Cell::get), TARGETS.with(Cell::get))
                })
                .await
        })
        .await;
    let what = if result.is_err() { "error" } else { what };
    metrics.reconcile_done(what, started.elapsed());
    // Everything the reconcile built (targets, plan, requests) is dropped by now.
    if targets >= crate::heap::LARGE_RECONCILE_TARGETS {
        crate::heap::release_free_memory();
    }
    result
}

/// Reconciles one resource:
///
/// 1. validate the spec (a bad spec gets `Ready=False`/`InvalidSpec` and no AWS call),
///    then check the operator's access rules (`NotPermitted`, no AWS call);
/// 2. ask the policies where the Secrets go (namespaces, then a name in each);
/// 3. gather what is there (watch caches, metadata only) and what the controller
///    remembers (the token its Secrets hold, what it wrote);
/// 4. get a token only when one is due or a Secret must be written: the held one while it
///    is fresh enough, else (after a restart, when not due) one seeded from the resource's
///    own intact Secret, else the shared token cache (one ECR call per key at a time);
/// 5. create missing Secrets (a 409 is a conflict, never an overwrite), rewrite ours that
///    are out of date (preconditioned on uid and resourceVersion), delete ours no longer
///    targeted, then fix the named ServiceAccounts' `imagePullSecrets`;
/// 6. write the status if it changed, publish Events, and requeue for the next refresh or
///    retry. A failure keeps every Secret as it is; only changes made by users or the
///    cluster trigger an earlier reconcile, never the operator's own status writes.
///
/// # Errors
/// [`Error`] when a Kubernetes API call the reconcile depends on fails (status, finalizer)
/// or the write fence closed; the controller retries with backoff.
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
    let owner = Owner::of(&cr);
    if cr.meta().deletion_timestamp.is_some() {
        outcome("deleting");
        ctx.metrics.forget(&namespace, &cr.name_any());
        return cleanup::finalize(&ctx, &cr, &owner).await;
    }
    // Whole seconds: status times are RFC 3339 seconds anyway, and messages stay readable.
    let now = crate::ecr::whole_seconds(Timestamp::now());
    let cr = resume(&ctx, cr, now).await?;
    let r = Reconciler {
        cr: &cr,
        ctx: &ctx,
        owner,
        now,
    };

    let spec = match cr.spec.validate() {
        Ok(spec) => spec,
        Err(e) => {
            outcome("invalid_spec");
            r.not_ready(reason::INVALID_SPEC, &e.to_string(), None, false)
                .await?;
            return Ok(Action::await_change());
        }
    };
    let (registries, identity) = (spec.registries(), spec.identity(&namespace));
    if let Err(denial) = ctx
        .settings
        .access
        .check(&namespace, &registries, &identity)
    {
        outcome("not_permitted");
        r.not_ready(reason::NOT_PERMITTED, &denial.to_string(), None, false)
            .await?;
        return Ok(Action::await_change());
    }
    if cr.spec.suspend {
        outcome("suspended");
        r.suspended().await?;
        return Ok(Action::await_change());
    }
    let layout = Layout::new(
        &spec.template,
        registries.iter().map(|r| r.host().to_string()).collect(),
    );
    let info = cr_info(&cr, &spec);
    let selection = selection(&cr);
    if let Err(e) = ctx.policies.check_selection(&selection) {
        let serving = status::ready(&r.status()).is_some_and(|c| c.status == "True");
        if matches!(e, PolicyError::Loading { .. }) && serving {
            // Its Secrets serve (e.g. written before a restart): keep them and the status
            // as they are until the plugin is compiled; its load reconciles this again.
            outcome("plugin_loading");
            tracing::info!(plugin = e.plugin(), hook = %e.hook(), "waiting for the policy plugin to load");
            return Ok(Action::await_change());
        }
        if matches!(e, PolicyError::Loading { .. }) {
            // Nothing failed: the plugin is being compiled. Its load reconciles this again.
            outcome("plugin_loading");
            r.policy_loading(&e).await?;
            return Ok(Action::await_change());
        }
        outcome("policy_failed");
        r.policy_failed(&e, None).await?;
        return Ok(Action::await_change());
    }
    let targets = match r.targets(&selection, &info).await {
        Ok(targets) => targets,
        Err(e) => {
            outcome("policy_failed");
            let attempt = ctx.memory.failures(&r.owner.uid).saturating_add(1);
            let delay = ctx.retry_delay(attempt, r.expires_in());
            r.policy_failed(&e, Some(delay)).await?;
            return Ok(Action::requeue(delay));
        }
    };

    let mut expanded = Vec::with_capacity(targets.len());
    for target in targets {
        match layout.expand(target) {
            Ok(parts) => expanded.extend(parts),
            Err(e) => {
                outcome("invalid_spec");
                r.not_ready(reason::INVALID_SPEC, &e.to_string(), None, false)
                    .await?;
                return Ok(Action::await_change());
            }
        }
    }
    let input = observe::input(&ctx, &cr, &r.owner, &spec, layout, expanded, now).await?;
    let _ = TARGETS.try_with(|t| t.set(input.targets.len() + input.stale.len()));
    // Copies outside the resource's namespace and ServiceAccount entries cannot be owned
    // by it: the finalizer lets the operator remove them when it is deleted. It is added
    // before anything is written, while the token is fetched.
    let finalizer = async {
        if plan::needs_finalizer(&input) && !cleanup::has_finalizer(&cr) {
            cleanup::add_finalizer(&ctx, &cr).await
        } else {
            Ok(())
        }
    };
    if input.targets.is_empty() {
        finalizer.await?;
        return r.no_namespace(&input).await;
    }

    let (finalized, token) = tokio::join!(finalizer, r.token(&spec, &input, &selection, &info));
    finalized?;
    let token = token?;
    let plan = plan::plan(&input, &token);
    let writer = SecretWriter {
        ctx: &ctx,
        owner: &r.owner,
    };
    let parts: HashMap<&SecretTarget, Part> =
        input.targets.iter().map(|t| (&t.target, t.part)).collect();
    let layout = &input.resource.layout;
    let render = |t: &SecretTarget| {
        let part = parts.get(t).copied().unwrap_or_default();
        match token.writable() {
            Some(held) => layout.render(&cr, t, part, held),
            None => layout.render_data(&cr, t, Default::default(), now),
        }
    };
    let results = writer.run(&plan.ops, &render).await?;
    let attempt = ctx.memory.failures(&r.owner.uid).saturating_add(1);
    let retry = Retry {
        write_delay: ctx.retry_delay(attempt, r.expires_in()),
        conflict_recheck: ctx.settings.conflict_recheck,
    };
    let settled = settle::settle(&input, &plan, &token, &results, &retry);
    r.remember_verified(&input, &plan);

    let sa_ops = plan::pull_secret_ops(
        &r.owner.uid,
        &input.resource.service_accounts,
        &input.service_accounts,
        &settled.served,
    );
    let sa_failures = apply::pull_secrets(&ctx, &sa_ops).await?;
    let settled = settle::with_service_account_failures(settled, &sa_failures, &input, &retry);
    let settled = verify::after_refresh(&ctx, &cr, settled, now).await;
    r.finish(&input, settled).await
}

/// `spec.suspend` set back to false: the `Suspended` condition turns False (reason
/// `Resumed`) before anything else is decided, so that every later status write of this
/// reconcile starts from it. Returns the resource with that status.
async fn resume(
    ctx: &Context,
    cr: Arc<ECRTokenRefresh>,
    now: Timestamp,
) -> Result<Arc<ECRTokenRefresh>, Error> {
    let previous = cr.status.clone().unwrap_or_default();
    if cr.spec.suspend || !status::is_suspended(&previous) {
        return Ok(cr);
    }
    let condition = status::condition(
        &previous.conditions,
        status::SUSPENDED,
        false,
        reason::RESUMED,
        "spec.suspend is false: refreshing",
        cr.meta().generation,
        now,
    );
    let desired = ECRTokenRefreshStatus {
        conditions: status::set_condition(&previous.conditions, condition),
        ..previous.clone()
    };
    if let Some(patch) = status::patch_between(&previous, &desired) {
        apply::patch_status(ctx, &cr, patch).await?;
    }
    tracing::info!("resumed");
    let mut resumed = (*cr).clone();
    resumed.status = Some(desired);
    Ok(Arc::new(resumed))
}

/// What the plugins see of a resource (never the token).
pub fn cr_info(cr: &ECRTokenRefresh, spec: &ValidSpec) -> CrInfo {
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
pub fn selection(cr: &ECRTokenRefresh) -> PolicySelection {
    let p = cr.spec.policy.clone().unwrap_or_default();
    PolicySelection {
        naming: p.naming,
        fanout: p.fanout,
        retry: p.retry,
    }
}

struct Reconciler<'a> {
    cr: &'a ECRTokenRefresh,
    ctx: &'a Context,
    owner: Owner,
    now: Timestamp,
}

impl Reconciler<'_> {
    fn status(&self) -> ECRTokenRefreshStatus {
        self.cr.status.clone().unwrap_or_default()
    }

    /// Time left on the token now in the Secrets, per status; `None` if unknown or past.
    fn expires_in(&self) -> Option<Duration> {
        self.status()
            .expires_at
            .map(|t| super::schedule::until(self.now, t.0))
            .filter(|d| !d.is_zero())
    }

    /// The Secrets this resource should have, per [`targets::resolve`], among the cached
    /// Namespaces.
    async fn targets(
        &self,
        selection: &PolicySelection,
        info: &CrInfo,
    ) -> Result<Vec<SecretTarget>, PolicyError> {
        let cached = self
            .ctx
            .caches
            .as_ref()
            .and_then(|c| c.namespaces.as_ref())
            .map(|s| s.state());
        targets::resolve(
            &self.ctx.policies,
            selection,
            info,
            &self.owner.namespace,
            cached.as_deref(),
            &self.ctx.settings.fanout_sources,
        )
        .await
    }

    /// The token the plan writes with, per [`plan::token_need`].
    async fn token(
        &self,
        spec: &ValidSpec,
        input: &Input,
        selection: &PolicySelection,
        info: &CrInfo,
    ) -> Result<TokenState, Error> {
        let need = plan::token_need(input);
        if need == TokenNeed::None {
            return Ok(TokenState::NotNeeded);
        }
        if let Some(held) = input.held.as_ref().filter(|h| input.accepts(h)) {
            return Ok(TokenState::Ready(Arc::clone(held)));
        }
        if need == TokenNeed::Repair
            && let Some(seeded) = self.seed(input).await
            && input.accepts(&seeded)
        {
            let seeded = Arc::new(seeded);
            self.ctx
                .memory
                .set_held(&self.owner.uid, Some(Arc::clone(&seeded)));
            return Ok(TokenState::Ready(seeded));
        }
        let requests = distinct_keys(observe::token_requests(spec, &self.owner.namespace));
        let fallback = input
            .held
            .clone()
            .filter(|h| h.serves(&input.resource.registries) && h.expires_at > self.now);
        let memory = &self.ctx.memory;
        let uid = &self.owner.uid;
        let generation = input.resource.generation;
        // After a failure, nothing is asked before its retry is due, whatever triggered this
        // reconcile: tokens other resources obtained meanwhile are taken, else the failure
        // stands.
        if let Some(failed) = memory.token_failure(uid, self.now, generation) {
            let peeked: Option<Vec<_>> = requests
                .iter()
                .map(|r| self.ctx.tokens.peek(r, |h| input.accepts_token(h)))
                .collect();
            if let Some(c) =
                peeked.and_then(|tokens| Credentials::assemble(&input.resource.registries, &tokens))
            {
                memory.set_token_failure(uid, None);
                return Ok(TokenState::Ready(Arc::new(c)));
            }
            let decision = match failed.retry_at {
                Some(at) => RetryDecision::RetryAfter(super::schedule::until(self.now, at)),
                None => RetryDecision::GiveUp {
                    reason: "the retry policy gave up".into(),
                },
            };
            return Ok(TokenState::Failed {
                error: failed.error,
                decision,
                fallback,
                fresh: false,
            });
        }
        // One lookup per key, all at once: each key's callers share one call (single flight).
        let obtained = futures::future::join_all(
            requests
                .iter()
                .map(|r| self.ctx.tokens.get(r, |h| input.accepts_token(h))),
        )
        .await;
        self.ctx.metrics.set_token_cache_keys(self.ctx.tokens.len());
        let mut tokens = Vec::with_capacity(obtained.len());
        let mut first_error = None;
        for o in obtained {
            self.ctx.metrics.token_lookup(o.lookup.label());
            match o.result {
                Ok(token) => {
                    if o.called {
                        self.ctx.metrics.ecr_call("success");
                    }
                    tokens.push(token);
                }
                Err(error) => {
                    if o.called {
                        self.ctx.metrics.ecr_call(error.kind.label());
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        let assembled = Credentials::assemble(&input.resource.registries, &tokens);
        match (first_error, assembled) {
            (None, Some(credentials)) => {
                memory.set_token_failure(uid, None);
                Ok(TokenState::Ready(Arc::new(credentials)))
            }
            (error, _) => {
                let error = error.unwrap_or_else(|| EcrError {
                    kind: FailureKind::Other,
                    registry_id: spec.registry.account_id.clone(),
                    region: spec.registry.region.clone(),
                    message: "no token for some registry of the resource".into(),
                });
                let attempt = memory.failures(uid).saturating_add(1);
                let failure = Failure {
                    kind: error.kind,
                    message: error.to_string(),
                    attempt,
                };
                let expires_in = self.expires_in();
                let decision = match self
                    .ctx
                    .policies
                    .decide_retry(selection, info, &failure, expires_in)
                    .await
                {
                    Ok(d) => d,
                    Err(pe) => {
                        tracing::warn!(
                            plugin = pe.plugin(),
                            reason = pe.metric_label(),
                            "retry policy failed; using the built-in backoff"
                        );
                        apply::event(
                            self.ctx,
                            self.cr,
                            true,
                            reason::POLICY_FAILED,
                            &format!("{pe}; using the built-in backoff"),
                            "Retry",
                        )
                        .await;
                        RetryDecision::RetryAfter(self.ctx.retry_delay(attempt, expires_in))
                    }
                };
                let retry_at = match &decision {
                    RetryDecision::RetryAfter(d) => Some(
                        self.now
                            .checked_add(*d)
                            .unwrap_or(self.now)
                            .max(self.now + jiff::SignedDuration::from_secs(1)),
                    ),
                    RetryDecision::GiveUp { .. } => None,
                };
                memory.set_token_failure(
                    uid,
                    Some(TokenFailure {
                        error: error.clone(),
                        retry_at,
                        generation,
                    }),
                );
                Ok(TokenState::Failed {
                    error,
                    decision,
                    fallback,
                    fresh: true,
                })
            }
        }
    }

    /// After a restart, the tokens in the resource's own Secret, when that Secret is ours,
    /// intact, agrees with `status.expiresAt` and holds exactly the resource's registries
    /// (copies in other namespaces are never read for a token). Each token is taken to expire
    /// at `status.expiresAt` (the earliest of them) and serves only this resource.
    async fn seed(&self, input: &Input) -> Option<Credentials> {
        let status = &input.resource.status;
        // Only the original format holds every token in one document to take back.
        if status.observed_generation != input.resource.generation
            || !input.resource.layout.format().is_default()
        {
            return None;
        }
        let (fetched_at, expires_at) = (
            status.last_updated_time.as_ref()?.0,
            status.expires_at.as_ref()?.0,
        );
        let own = input.targets.iter().find(|t| {
            t.target.namespace == self.owner.namespace
                && matches!(&t.found, Found::Ours { edited: false, .. })
        })?;
        let writer = SecretWriter {
            ctx: self.ctx,
            owner: &self.owner,
        };
        let found = match writer.get_with_data(&own.target).await {
            Ok(found) => found?,
            Err(error) => {
                tracing::warn!(%error, "cannot read the resource's own Secret to seed the token");
                return None;
            }
        };
        let wanted = &input.resource.registries;
        let hosts: Vec<&str> = wanted.iter().map(|w| w.host.as_str()).collect();
        match secret::seed_tokens(&found, &self.owner, &hosts, expires_at) {
            Ok(tokens) => {
                tracing::info!(secret = %own.target, "token taken back from the resource's own Secret");
                let entries = wanted
                    .iter()
                    .zip(tokens)
                    .map(|(w, token)| {
                        let held = HeldToken {
                            key: w.key.clone(),
                            token,
                            fetched_at,
                        };
                        (w.host.clone(), Arc::new(held))
                    })
                    .collect();
                Credentials::new(entries)
            }
            Err(why) => {
                tracing::info!(secret = %own.target, %why, "the resource's own Secret cannot seed the token");
                None
            }
        }
    }

    /// Records the Secrets found intact without a record yet, so that a later change by
    /// someone else (a moved resourceVersion) is noticed.
    fn remember_verified(&self, input: &Input, plan: &plan::Plan) {
        let planned: std::collections::HashSet<&SecretTarget> =
            plan.ops.iter().map(|op| op.target()).collect();
        for t in &input.targets {
            let Found::Ours {
                meta,
                edited: false,
            } = &t.found
            else {
                continue;
            };
            if !meta.metadata_intact || planned.contains(&t.target) {
                continue;
            }
            let recalled = self.ctx.memory.recall(&t.target, &self.owner.uid, meta);
            if recalled.meta.resource_version == meta.resource_version {
                self.ctx.memory.record(
                    t.target.clone(),
                    Written::new(&self.owner.uid, &meta.uid, &meta.resource_version)
                        .holding(meta.data_hash.as_deref(), meta.expires_at),
                );
            }
        }
    }

    /// The fan-out policy chose nothing: remove what is no longer targeted, say so.
    async fn no_namespace(&self, input: &Input) -> Result<Action, Error> {
        outcome("no_namespace");
        let plan = plan::plan(input, &TokenState::NotNeeded);
        let writer = SecretWriter {
            ctx: self.ctx,
            owner: &self.owner,
        };
        let render = |t: &SecretTarget| secret::render_data(self.cr, t, Vec::new(), self.now);
        let results = writer.run(&plan.ops, &render).await?;
        let sa_ops = plan::pull_secret_ops(
            &self.owner.uid,
            &[],
            &input.service_accounts,
            &Default::default(),
        );
        let sa_failures = apply::pull_secrets(self.ctx, &sa_ops).await?;
        let left = results
            .iter()
            .filter(|r| !matches!(r, settle::OpResult::Done { .. }))
            .count()
            + sa_failures.len();
        let mut message =
            "the fan-out policy selected no namespace; no Secret is written".to_string();
        if !self
            .ctx
            .settings
            .fanout_sources
            .contains(&self.owner.namespace)
        {
            message.push_str(&format!(
                " (this resource may only write into its own namespace {:?}: the operator's \
                 fanout.allowed_source_namespaces does not list it)",
                self.owner.namespace
            ));
        }
        let retry = (left > 0).then(|| {
            let attempt = self.ctx.memory.failures(&self.owner.uid).saturating_add(1);
            self.ctx.retry_delay(attempt, None)
        });
        self.not_ready(reason::NO_NAMESPACE_SELECTED, &message, retry, left > 0)
            .await?;
        Ok(retry.map_or_else(Action::await_change, Action::requeue))
    }

    /// Writes the status (when it changed), remembers, publishes, and says when to come back.
    async fn finish(&self, input: &Input, settled: Outcome) -> Result<Action, Error> {
        outcome(settled.label);
        let uid = &self.owner.uid;
        let memory = &self.ctx.memory;
        memory.set_held(uid, settled.held.clone());
        if settled.failed {
            let why = status::ready(&settled.status).map_or("", |c| c.reason.as_str());
            self.ctx.metrics.retry(why);
        }
        let previous = &input.resource.status;
        if let Some(patch) = status::patch_between(previous, &settled.status) {
            // A refused status write leaves the failure count as it was: the controller's
            // retry counts it, so the backoff keeps growing.
            apply::patch_status(self.ctx, self.cr, patch).await?;
        }
        memory.set_failures(uid, settled.status.consecutive_failures.unwrap_or(0));
        if settled.contested {
            let backoff = settled.requeue.unwrap_or_default();
            memory.set_contested_until(uid, Some(Instant::now() + backoff));
        } else if !settled.contest_waiting {
            memory.set_contested_until(uid, None);
        }
        if let Some(expires_at) = settled.status.expires_at.as_ref() {
            self.ctx
                .metrics
                .token_expiry(&self.owner.namespace, &self.owner.name, expires_at.0);
        }
        let changed_reason = status::ready(previous).map(|c| c.reason.as_str())
            != status::ready(&settled.status).map(|c| c.reason.as_str());
        for note in &settled.notes {
            if note.warning && !(settled.failed || changed_reason) {
                continue;
            }
            if !note.warning {
                self.ctx.metrics.secrets_written(note.reason, note.count);
            }
            let action = if note.warning { "Reconcile" } else { "Refresh" };
            apply::event(
                self.ctx,
                self.cr,
                note.warning,
                note.reason,
                &note.note,
                action,
            )
            .await;
        }
        if settled.label == "refreshed" {
            let expires_at = settled
                .status
                .expires_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            tracing::info!(served = settled.served.len(), %expires_at, "secrets written");
        }
        Ok(match settled.requeue {
            Some(d) => Action::requeue(d.max(Duration::from_millis(500))),
            None => Action::await_change(),
        })
    }

    /// Sets `Ready=False` with `reason` and `message`, keeping what describes the Secrets in
    /// place; publishes a Warning when the reason changed or `failed` (one Event per reason,
    /// repeats counted on it).
    /// `spec.suspend`: no AWS call and no Secret write; `Ready` keeps its last value, the
    /// `Suspended` condition says so, no refresh is scheduled, and the expiry gauge keeps
    /// counting down from `status.expiresAt` (so alerts still fire).
    async fn suspended(&self) -> Result<(), Error> {
        let previous = self.status();
        let kept = match previous.expires_at.as_ref() {
            Some(e) => format!("; the Secrets are kept as they are and expire at {}", e.0),
            None => "; the Secrets are kept as they are".to_string(),
        };
        let message = format!("spec.suspend is true: nothing is refreshed{kept}");
        let condition = status::condition(
            &previous.conditions,
            status::SUSPENDED,
            true,
            reason::SUSPENDED,
            &message,
            self.cr.meta().generation,
            self.now,
        );
        let desired = ECRTokenRefreshStatus {
            next_refresh_time: None,
            conditions: status::set_condition(&previous.conditions, condition),
            ..previous.clone()
        };
        if let Some(patch) = status::patch_between(&previous, &desired) {
            apply::patch_status(self.ctx, self.cr, patch).await?;
        }
        if let Some(expires_at) = &previous.expires_at {
            self.ctx
                .metrics
                .token_expiry(&self.owner.namespace, &self.owner.name, expires_at.0);
        }
        if !status::is_suspended(&previous) {
            tracing::info!("suspended");
            apply::event(
                self.ctx,
                self.cr,
                false,
                reason::SUSPENDED,
                &message,
                "Suspend",
            )
            .await;
        }
        Ok(())
    }

    async fn not_ready(
        &self,
        why: &str,
        message: &str,
        retry_in: Option<Duration>,
        failed: bool,
    ) -> Result<(), Error> {
        let previous = self.status();
        let message = status::truncate(message, status::MAX_MESSAGE);
        let condition = status::ready_condition(
            &previous.conditions,
            false,
            why,
            &message,
            self.cr.meta().generation,
            self.now,
        );
        let failures = if failed {
            self.ctx.memory.failures(&self.owner.uid).saturating_add(1)
        } else {
            0
        };
        // `observedGeneration` stays: the Secrets still hold what the last applied spec
        // asked for (the condition names the generation this failure is about).
        let desired = ECRTokenRefreshStatus {
            phase: Some(Phase::Failed),
            error: Some(message.clone()),
            next_refresh_time: retry_in
                .and_then(|d| self.now.checked_add(d).ok())
                .map(Time),
            consecutive_failures: (failures > 0).then_some(failures),
            conditions: status::with_condition(&previous.conditions, condition),
            ..previous.clone()
        };
        if let Some(patch) = status::patch_between(&previous, &desired) {
            apply::patch_status(self.ctx, self.cr, patch).await?;
        }
        self.ctx.memory.set_failures(&self.owner.uid, failures);
        tracing::warn!(reason = why, message = %message, "not ready");
        let changed =
            status::ready(&previous).is_none_or(|c| c.reason != why || c.status != "False");
        if changed || failed {
            if failed {
                self.ctx.metrics.retry(why);
            }
            apply::event(self.ctx, self.cr, true, why, &message, "Reconcile").await;
        }
        Ok(())
    }

    /// A plugin the resource selects is still being compiled (a start-up, or a file just
    /// dropped into the plugins directory), and none of its Secrets serve yet:
    /// `Ready=False` with reason `PolicyLoading`, a Normal Event, and nothing counted as a
    /// failure (no `Failed` phase, no `error`, no consecutive failures). The plugin's load
    /// reconciles the resource again.
    async fn policy_loading(&self, e: &PolicyError) -> Result<(), Error> {
        let previous = self.status();
        let message = format!(
            "waiting for policy plugin {:?} ({} hook) to finish compiling; the resource is \
             reconciled again once it is loaded",
            e.plugin(),
            e.hook()
        );
        let condition = status::ready_condition(
            &previous.conditions,
            false,
            reason::POLICY_LOADING,
            &message,
            self.cr.meta().generation,
            self.now,
        );
        let desired = ECRTokenRefreshStatus {
            phase: previous.phase.filter(|p| *p != Phase::Failed),
            error: None,
            next_refresh_time: None,
            consecutive_failures: None,
            conditions: status::with_condition(&previous.conditions, condition),
            ..previous.clone()
        };
        if let Some(patch) = status::patch_between(&previous, &desired) {
            apply::patch_status(self.ctx, self.cr, patch).await?;
        }
        self.ctx.memory.set_failures(&self.owner.uid, 0);
        tracing::info!(plugin = e.plugin(), hook = %e.hook(), "waiting for the policy plugin to load");
        let changed = status::ready(&previous)
            .is_none_or(|c| c.reason != reason::POLICY_LOADING || c.status != "False");
        if changed {
            apply::event(
                self.ctx,
                self.cr,
                false,
                reason::POLICY_LOADING,
                &message,
                "Reconcile",
            )
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
        self.not_ready(
            reason::POLICY_FAILED,
            &e.to_string(),
            retry_in,
            retry_in.is_some(),
        )
        .await
    }
}

/// The requests of `requests` (host, request) with one per token key, in first-seen order:
/// hosts of one key share its token.
fn distinct_keys(requests: Vec<(String, TokenRequest)>) -> Vec<TokenRequest> {
    let mut seen = std::collections::BTreeSet::new();
    requests
        .into_iter()
        .filter_map(|(_, r)| seen.insert(crate::ecr::TokenKey::of(&r)).then_some(r))
        .collect()
}
