//! The finalizer that removes what the resource's ownerReference cannot reach: copies in
//! other namespaces and the `imagePullSecrets` entries the operator added. It is removed
//! only once every copy is confirmed gone (the API answered 200 or 404) and every entry is
//! removed; anything else keeps it, is retried with backoff and shows in status and an
//! Event.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;

use super::apply::{self, SecretWriter};
use super::plan::{self, SecretOp};
use super::settle::OpResult;
use super::status::{self, reason};
use super::{Context, Error, observe};
use crate::api::ECRTokenRefresh;
use crate::secret::{self, Owner, SecretMeta, SecretTarget};

/// The finalizer the operator puts on resources whose Secrets or ServiceAccount entries
/// their ownerReference cannot remove.
pub const FINALIZER: &str = "ecr.aws.edenlab.io/cleanup";

/// Whether `cr` carries [`FINALIZER`].
pub fn has_finalizer(cr: &ECRTokenRefresh) -> bool {
    cr.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds [`FINALIZER`].
///
/// # Errors
/// [`Error::WriteMetadata`], [`Error::Fenced`].
pub(super) async fn add_finalizer(ctx: &Context, cr: &ECRTokenRefresh) -> Result<(), Error> {
    let mut finalizers = cr.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    apply::set_finalizers(ctx, cr, finalizers).await
}

/// Finishes the deletion of `cr`: deletes every Secret of it in every namespace (listed by
/// the owner labels, metadata only, so nothing depends on status or the cache being
/// complete), each preconditioned on its uid and resourceVersion, and removes the
/// `imagePullSecrets` entries it added; then removes the finalizer. When anything is
/// left, the finalizer stays, the status says what and the reconcile is retried.
///
/// # Errors
/// [`Error::ReadSecret`] when the Secrets cannot be listed, [`Error::WriteMetadata`] when
/// the finalizer cannot be removed, [`Error::Fenced`].
pub(super) async fn finalize(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    owner: &Owner,
) -> Result<Action, Error> {
    if !has_finalizer(cr) {
        ctx.memory.forget_resource(&owner.uid);
        return Ok(Action::await_change());
    }
    let copies = list_copies(ctx, owner).await?;
    let ops: Vec<SecretOp> = copies
        .iter()
        .map(|(target, meta)| SecretOp::Delete {
            target: target.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        })
        .collect();
    let writer = SecretWriter { ctx, owner };
    let render = |t: &SecretTarget| secret::render_data(cr, t, Vec::new(), jiff::Timestamp::now());
    let results = writer.run(&ops, &render).await?;
    let mut left: Vec<String> = ops
        .iter()
        .zip(&results)
        .filter_map(|(op, r)| match r {
            OpResult::Done { .. } => None,
            OpResult::Failed(m) => Some(format!("Secret {}: {m}", op.target())),
            _ => Some(format!(
                "Secret {}: changed while being deleted",
                op.target()
            )),
        })
        .collect();
    let views =
        observe::service_accounts(ctx, &owner.uid, &BTreeSet::new(), &BTreeSet::new()).await;
    let sa_ops = plan::pull_secret_ops(&owner.uid, &[], &views, &BTreeSet::new());
    left.extend(
        apply::pull_secrets(ctx, &sa_ops)
            .await?
            .into_iter()
            .map(|(_, message)| message),
    );
    if left.is_empty() {
        let finalizers = cr
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        apply::set_finalizers(ctx, cr, finalizers).await?;
        ctx.memory.forget_resource(&owner.uid);
        tracing::info!(secrets = copies.len(), "cleaned up; finalizer removed");
        return Ok(Action::await_change());
    }
    let attempt = ctx.memory.bump_failures(&owner.uid);
    let delay = ctx.retry_delay(attempt, None);
    let message = status::truncate(
        &format!(
            "deleting: {} item(s) could not be removed yet, retrying in {}s: {}",
            left.len(),
            delay.as_secs().max(1),
            left.join("; ")
        ),
        status::MAX_MESSAGE,
    );
    tracing::warn!(left = left.len(), "cleanup incomplete; the finalizer stays");
    ctx.metrics.retry(reason::CLEANUP_FAILED);
    let patch =
        serde_json::json!({"status": {"error": message, "phase": crate::api::Phase::Failed}});
    if let Err(error) = apply::patch_status(ctx, cr, patch).await {
        tracing::warn!(%error, "cannot write the status of a resource being deleted");
    }
    apply::event(ctx, cr, true, reason::CLEANUP_FAILED, &message, "Delete").await;
    Ok(Action::requeue(delay))
}

/// The Secrets the operator writes, as (type, label selector it must also match): one per
/// format of `spec.secretTemplate` (the installed admission policy allows the same).
const WRITTEN_SHAPES: [(&str, Option<&str>); 3] = [
    (secret::SECRET_TYPE, None),
    (crate::secret_format::BASIC_AUTH_TYPE, None),
    (
        crate::secret_format::OPAQUE_TYPE,
        Some("argocd.argoproj.io/secret-type=repository"),
    ),
];

/// Every Secret of `owner` in the namespaces the operator watches: Secrets of the shapes it
/// writes ([`WRITTEN_SHAPES`]; anything else labelled alike is a tenant's, and never
/// deleted) with the owner labels (and, for Secrets written by earlier versions, the owner
/// name and namespace labels).
async fn list_copies(
    ctx: &Context,
    owner: &Owner,
) -> Result<Vec<(SecretTarget, SecretMeta)>, Error> {
    let api: Api<PartialObjectMeta<Secret>> = match ctx.settings.secrets_scope(&owner.namespace) {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut selectors = vec![secret::owner_selector(&owner.uid)];
    if owner.name.len() <= 63 {
        selectors.push(format!(
            "{},{}={},{}={},!{}",
            secret::MANAGED_SELECTOR,
            secret::OWNER_NAME_ANNOTATION,
            owner.name,
            secret::OWNER_NAMESPACE_LABEL,
            owner.namespace,
            secret::OWNER_UID_LABEL
        ));
    }
    let mut out = Vec::new();
    let mut lists = Vec::with_capacity(selectors.len() * WRITTEN_SHAPES.len());
    for selector in &selectors {
        for (type_, label) in WRITTEN_SHAPES {
            let labels = match label {
                Some(l) => format!("{selector},{l}"),
                None => selector.clone(),
            };
            lists.push((labels, format!("type={type_}")));
        }
    }
    for (selector, fields) in lists {
        let list = api
            .list_metadata(&ListParams::default().labels(&selector).fields(&fields))
            .await
            .map_err(|source| Error::ReadSecret {
                target: format!("Secrets labelled {selector}"),
                source,
            })?;
        for s in list {
            let meta = SecretMeta::read(&s.metadata, owner);
            if meta.ours {
                let target = SecretTarget {
                    namespace: s.namespace().unwrap_or_default(),
                    name: s.name_any(),
                };
                out.push((target, meta));
            }
        }
    }
    Ok(out)
}
