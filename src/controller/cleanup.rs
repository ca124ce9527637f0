//! The finalizer that removes copies outside the resource's namespace, which its
//! ownerReference cannot reach.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{Context, Error};
use crate::api::ECRTokenRefresh;
use crate::secret::{MANAGED_SELECTOR, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};

/// The finalizer the operator puts on resources that write outside their namespace.
pub const FINALIZER: &str = "ecr.aws.edenlab.io/cleanup";

/// Whether `cr` carries [`FINALIZER`].
pub fn has_finalizer(cr: &ECRTokenRefresh) -> bool {
    cr.finalizers().iter().any(|f| f == FINALIZER)
}

fn status_error(cr: &ECRTokenRefresh, source: kube::Error) -> Error {
    Error::WriteMetadata {
        target: format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any()),
        source,
    }
}

/// Adds [`FINALIZER`].
pub async fn add_finalizer(ctx: &Context, cr: &ECRTokenRefresh) -> Result<(), Error> {
    let mut finalizers = cr.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(ctx, cr, finalizers).await
}

/// Removes [`FINALIZER`], keeping any other finalizer.
pub async fn remove_finalizer(ctx: &Context, cr: &ECRTokenRefresh) -> Result<(), Error> {
    let finalizers = cr
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, cr, finalizers).await
}

/// A merge patch of `metadata.finalizers`, with the resourceVersion as a precondition so
/// that a finalizer another controller added meanwhile is never dropped (409 instead,
/// and the controller retries).
async fn set_finalizers(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<ECRTokenRefresh> =
        Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": cr.resource_version()}});
    api.patch(
        &cr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| status_error(cr, e))
}

/// Deletes every Secret of `cr` in every namespace (selected by the owner labels, so
/// nothing depends on status being complete) and its entries in the named
/// ServiceAccounts.
///
/// # Errors
/// [`Error::ReadSecret`] when listing fails, [`Error::DeleteSecret`] when deleting fails;
/// the finalizer stays and the controller retries.
pub async fn remove_copies(ctx: &Context, cr: &ECRTokenRefresh) -> Result<(), Error> {
    let selector = format!(
        "{MANAGED_SELECTOR},{OWNER_NAME_LABEL}={},{OWNER_NAMESPACE_LABEL}={}",
        cr.name_any(),
        cr.namespace().unwrap_or_default()
    );
    let all: Api<Secret> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let fail = |source| Error::ReadSecret {
        target: format!("secrets labelled {selector}"),
        source,
    };
    let copies = all
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(fail)?;
    for copy in copies {
        let (namespace, name) = (copy.namespace().unwrap_or_default(), copy.name_any());
        for sa in &cr.spec.service_accounts {
            let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
            let patch = json!({"imagePullSecrets": [{"name": name, "$patch": "delete"}]});
            match api
                .patch(sa, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(error) => {
                    tracing::warn!(%namespace, service_account = %sa, %error, "cannot remove from imagePullSecrets")
                }
            }
        }
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {
                tracing::info!(%namespace, %name, "removed a copy of a deleted resource")
            }
            Err(source) => {
                return Err(Error::DeleteSecret {
                    target: format!("{namespace}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}
