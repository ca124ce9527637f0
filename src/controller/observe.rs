//! Gather: the plain data a plan is made from, read from the watch caches (and, without
//! caches, from metadata-only GETs), compared with what the controller remembers.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;

use super::apply::added_pull_secrets;
use super::plan::{Found, Input, Resource, ServiceAccountView, Stale, Target};
use super::{Context, Error, caches};
use crate::api::{ECRTokenRefresh, ValidSpec};
use crate::ecr::{TokenKey, TokenRequest, Wanted};
use crate::secret::{Owner, SecretMeta, SecretTarget};
use crate::secret_format::{Layout, Part};

/// Builds the plan's input for `cr` (validated as `spec`, its Secrets laid out as
/// `layout`) and its `targets`, each with the part of the credentials it holds.
///
/// # Errors
/// [`Error::ReadSecret`] when, without caches, a target cannot be read.
pub(super) async fn input(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    owner: &Owner,
    spec: &ValidSpec,
    layout: Layout,
    targets: Vec<(SecretTarget, Part)>,
    now: Timestamp,
) -> Result<Input, Error> {
    let mut observed = Vec::with_capacity(targets.len());
    for (target, part) in targets {
        let found = find(ctx, owner, &target).await?;
        observed.push(Target {
            target,
            found,
            part,
        });
    }
    verify_first_sight(ctx, owner, &mut observed).await;
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
    let service_accounts = service_accounts(ctx, &owner.uid, &named, &namespaces).await;
    Ok(Input {
        now,
        resource: Resource {
            owner: owner.clone(),
            generation: cr.metadata.generation,
            registries: wanted(spec, &owner.namespace),
            frequency: spec.frequency,
            status: cr.status.clone().unwrap_or_default(),
            service_accounts: cr.spec.service_accounts.clone(),
            layout,
        },
        targets: observed,
        stale,
        service_accounts,
        held: ctx.memory.held(&owner.uid),
        failures: ctx.memory.failures(&owner.uid),
        recently_written: ctx.memory.recently_written(&owner.uid),
        contested: ctx.memory.contested(&owner.uid),
        schedule: ctx.settings.schedule.clone(),
    })
}

/// Every registry host of `spec` with the key of the token that serves it, for a resource
/// in `namespace` (whose identity may be a ServiceAccount of that namespace).
pub fn wanted(spec: &ValidSpec, namespace: &str) -> Vec<Wanted> {
    token_requests(spec, namespace)
        .into_iter()
        .map(|(host, request)| Wanted {
            host,
            key: TokenKey::of(&request),
        })
        .collect()
}

/// Every registry host of `spec` (`spec.ecrRegistry` first) with what to ask for its token.
pub fn token_requests(spec: &ValidSpec, namespace: &str) -> Vec<(String, TokenRequest)> {
    let identity = spec.identity(namespace);
    spec.registries()
        .iter()
        .map(|r| {
            (
                r.host().to_string(),
                TokenRequest::for_registry(r, &identity),
            )
        })
        .collect()
}

/// Secrets of ours seen for the first time (after a restart, or a new leader): their
/// metadata says nothing of an edit made while the operator was away, so their data is
/// read once and checked against their hash annotation; a mismatch makes them edited
/// (rewritten). One paginated list by the owner label, a few Secrets a page, decoded here
/// and dropped at once; what cannot be read is left to the next refresh.
async fn verify_first_sight(ctx: &Context, owner: &Owner, observed: &mut [Target]) {
    const PAGE: u32 = 10;
    if ctx.caches.is_none() {
        return;
    }
    let unseen: BTreeSet<SecretTarget> = observed
        .iter()
        .filter(|t| {
            matches!(&t.found, Found::Ours { edited: false, .. })
                && !ctx.memory.has_record(&t.target, &owner.uid)
        })
        .map(|t| t.target.clone())
        .collect();
    if unseen.is_empty() {
        return;
    }
    let path =
        <Secret as kube::Resource>::url_path(&(), ctx.settings.secrets_scope(&owner.namespace));
    let mut mismatched = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = kube::api::ListParams::default()
            .labels(&crate::secret::owner_selector(&owner.uid))
            .limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let Ok(request) = kube::core::Request::new(&path).list(&lp) else {
            return;
        };
        let page: kube::core::ObjectList<Secret> = match ctx.client.request_text(request).await {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(page) => page,
                Err(_) => {
                    tracing::warn!(
                        "cannot decode the list of the resource's Secrets; not verified"
                    );
                    return;
                }
            },
            Err(error) => {
                tracing::warn!(error = %super::apply::describe(&error), "cannot list the resource's Secrets; not verified");
                return;
            }
        };
        for s in &page.items {
            let target = SecretTarget {
                namespace: s.namespace().unwrap_or_default(),
                name: s.name_any(),
            };
            if !unseen.contains(&target) {
                continue;
            }
            let data = s.data.as_ref().map(|d| {
                let template = s.annotations().get(crate::secret::TEMPLATE_HASH_ANNOTATION);
                crate::secret::content_hash(
                    d.iter().map(|(k, v)| (k, &v.0)),
                    template.map(String::as_str),
                )
            });
            let annotated = s.annotations().get(crate::secret::DATA_HASH_ANNOTATION);
            if data.as_ref() != annotated {
                mismatched.insert(target);
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    for t in observed.iter_mut() {
        if mismatched.contains(&t.target)
            && let Found::Ours { edited, .. } = &mut t.found
        {
            tracing::info!(secret = %t.target, "data changed while the operator was away");
            *edited = true;
        }
    }
}

/// What is at `target`: the managed-Secret cache (metadata only) and the record of the
/// operator's own writes decide; without caches, a metadata-only GET.
async fn find(ctx: &Context, owner: &Owner, target: &SecretTarget) -> Result<Found, Error> {
    let cached: Option<SecretMeta> = match &ctx.caches {
        Some(caches) => caches.secrets.get(target).map(|s| s.relative_to(owner)),
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
    let mut out: Vec<Stale> = match &ctx.caches {
        Some(caches) => {
            let mut out: Vec<Stale> = caches
                .secrets
                .state()
                .iter()
                .filter(|s| s.is_ours(owner))
                .filter_map(|s| {
                    let meta = s.relative_to(owner);
                    let target = s.target();
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
            let cached: BTreeSet<SecretTarget> = out.iter().map(|s| s.target.clone()).collect();
            for (target, meta) in ctx.memory.recent_writes(&owner.uid) {
                if !wanted.contains(&target) && !cached.contains(&target) {
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
/// `namespaces`, and every one holding an entry the resource with `uid` added. A
/// ServiceAccount too large to cache whole is read from the API server (only when named in
/// a target namespace; unreadable ones are skipped, the next reconcile tries again).
pub(super) async fn service_accounts(
    ctx: &Context,
    uid: &str,
    named: &BTreeSet<&str>,
    namespaces: &BTreeSet<&str>,
) -> Vec<ServiceAccountView> {
    let Some(caches) = &ctx.caches else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sa in caches.service_accounts.state() {
        let namespace = sa.namespace().unwrap_or_default();
        let name = sa.name_any();
        let wanted = named.contains(name.as_str()) && namespaces.contains(namespace.as_str());
        let truncated = sa.annotations().contains_key(caches::TRUNCATED_ANNOTATION);
        let full = if truncated && wanted {
            let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
            match api.get_opt(&name).await {
                Ok(Some(full)) => Arc::new(full),
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%namespace, service_account = %name, %error, "cannot read a ServiceAccount");
                    continue;
                }
            }
        } else {
            sa
        };
        let added = added_pull_secrets(&full);
        if !(wanted || added.values().any(|u| u == uid)) {
            continue;
        }
        out.push(ServiceAccountView {
            namespace,
            name,
            resource_version: full.resource_version().unwrap_or_default(),
            pull_secrets: full
                .image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect(),
            added,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}
