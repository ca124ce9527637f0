//! Gather: the plain data a plan is made from, read from the watch caches (and, without
//! caches, from metadata-only GETs), compared with what the controller remembers.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use super::apply::added_pull_secrets;
use super::plan::{Found, Input, Resource, ServiceAccountView, Stale, Target};
use super::{Context, Error};
use crate::api::{ECRTokenRefresh, ValidSpec};
use crate::ecr::TokenKey;
use crate::secret::{Owner, SecretMeta, SecretTarget};

/// Builds the plan's input for `cr` (validated as `spec`) and its `targets`.
///
/// # Errors
/// [`Error::ReadSecret`] when, without caches, a target cannot be read.
pub(super) async fn input(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    owner: &Owner,
    spec: &ValidSpec,
    targets: Vec<SecretTarget>,
    now: Timestamp,
) -> Result<Input, Error> {
    let mut observed = Vec::with_capacity(targets.len());
    for target in targets {
        let found = find(ctx, owner, &target).await?;
        observed.push(Target { target, found });
    }
    let stale = stale(ctx, cr, owner, &observed);
    let named: BTreeSet<&str> = cr
        .spec
        .service_accounts
        .iter()
        .map(String::as_str)
        .collect();
    let namespaces: BTreeSet<&str> = observed
        .iter()
        .map(|t| t.target.namespace.as_str())
        .collect();
    let service_accounts = service_accounts(ctx, &owner.uid, &named, &namespaces);
    Ok(Input {
        now,
        resource: Resource {
            owner: owner.clone(),
            generation: cr.metadata.generation,
            registry: spec.registry.host.clone(),
            frequency: spec.frequency,
            status: cr.status.clone().unwrap_or_default(),
            service_accounts: cr.spec.service_accounts.clone(),
            token_key: TokenKey {
                region: spec.registry.region.clone(),
                fips: spec.registry.fips,
            },
        },
        targets: observed,
        stale,
        service_accounts,
        held: ctx.memory.held(&owner.uid),
        schedule: ctx.settings.schedule.clone(),
    })
}

/// What is at `target`: the managed-Secret cache (metadata only) and the record of the
/// operator's own writes decide; without caches, a metadata-only GET.
async fn find(ctx: &Context, owner: &Owner, target: &SecretTarget) -> Result<Found, Error> {
    let cached: Option<SecretMeta> = match &ctx.caches {
        Some(caches) => caches
            .secrets
            .get(&ObjectRef::new(&target.name).within(&target.namespace))
            .map(|s| SecretMeta::read(&s.metadata, owner)),
        None => {
            let api: Api<PartialObjectMeta<Secret>> =
                Api::namespaced(ctx.client.clone(), &target.namespace);
            api.get_metadata_opt(&target.name)
                .await
                .map_err(|source| Error::ReadSecret {
                    target: target.to_string(),
                    source,
                })?
                .map(|s| SecretMeta::read(&s.metadata, owner))
        }
    };
    Ok(match cached {
        Some(meta) if meta.ours => {
            let recalled = ctx.memory.recall(target, &owner.uid, &meta);
            Found::Ours {
                meta: recalled.meta,
                edited: recalled.edited,
            }
        }
        Some(_) => Found::Foreign,
        None => match ctx.memory.just_written(target, &owner.uid) {
            Some(meta) => Found::Ours {
                meta,
                edited: false,
            },
            None => Found::Absent,
        },
    })
}

/// The resource's Secrets no longer among its targets: from the cache (by the owner
/// labels, in the namespaces it may write into), or, without caches, from its status.
fn stale(ctx: &Context, cr: &ECRTokenRefresh, owner: &Owner, targets: &[Target]) -> Vec<Stale> {
    let wanted: BTreeSet<&SecretTarget> = targets.iter().map(|t| &t.target).collect();
    let status_expiry = cr
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| t.0);
    let may_fan_out = ctx.settings.fanout_sources.contains(&owner.namespace);
    let mut out: Vec<Stale> = match &ctx.caches {
        Some(caches) => {
            let mut out: Vec<Stale> = caches
                .secrets
                .state()
                .iter()
                .filter(|s| {
                    may_fan_out || s.namespace().as_deref() == Some(owner.namespace.as_str())
                })
                .filter_map(|s| {
                    let meta = SecretMeta::read(&s.metadata, owner);
                    let target = SecretTarget {
                        namespace: s.namespace().unwrap_or_default(),
                        name: s.name_any(),
                    };
                    let home = target.namespace == owner.namespace;
                    // Elsewhere, a Secret merely labelled with this resource's uid is not
                    // taken for a copy of it: the operator wrote or verified it, or it holds
                    // the token status says the copies hold (a copy left behind while the
                    // operator was down).
                    let copy = home
                        || ctx.memory.has_record(&target, &owner.uid)
                        || (meta.expires_at.is_some() && meta.expires_at == status_expiry);
                    (meta.ours && copy && !wanted.contains(&target))
                        .then_some(Stale { target, meta })
                })
                .collect();
            // Written moments ago, not in the cache yet.
            for (target, meta) in ctx.memory.recent_writes(&owner.uid) {
                if !wanted.contains(&target) && !out.iter().any(|s| s.target == target) {
                    out.push(Stale { target, meta });
                }
            }
            out
        }
        None => cr
            .status
            .as_ref()
            .map(|st| st.secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| SecretTarget {
                namespace: s.namespace,
                name: s.name,
            })
            .filter(|t| !wanted.contains(t))
            .filter_map(|target| {
                let meta = ctx.memory.just_written(&target, &owner.uid)?;
                Some(Stale { target, meta })
            })
            .collect(),
    };
    out.sort_by(|a, b| a.target.cmp(&b.target));
    out
}

/// The ServiceAccounts a plan may change: those named in `named` in the target
/// `namespaces`, and every one holding an entry the resource with `uid` added.
pub(super) fn service_accounts(
    ctx: &Context,
    uid: &str,
    named: &BTreeSet<&str>,
    namespaces: &BTreeSet<&str>,
) -> Vec<ServiceAccountView> {
    let Some(caches) = &ctx.caches else {
        return Vec::new();
    };
    let mut out: Vec<ServiceAccountView> = caches
        .service_accounts
        .state()
        .iter()
        .filter_map(|sa: &Arc<k8s_openapi::api::core::v1::ServiceAccount>| {
            let namespace = sa.namespace().unwrap_or_default();
            let added = added_pull_secrets(sa);
            let relevant = (named.contains(sa.name_any().as_str())
                && namespaces.contains(namespace.as_str()))
                || added.values().any(|u| u == uid);
            relevant.then(|| ServiceAccountView {
                namespace,
                name: sa.name_any(),
                resource_version: sa.resource_version().unwrap_or_default(),
                pull_secrets: sa
                    .image_pull_secrets
                    .iter()
                    .flatten()
                    .map(|r| r.name.clone())
                    .collect(),
                added,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}
