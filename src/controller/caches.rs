//! The watch caches reconciles read instead of asking the API server, and what they keep.
//!
//! Memory must stay flat whatever tenants create: the Secret watch is metadata-only and
//! selected by the managed-by label and the image-pull type, and every cached object is
//! cut down ([`strip_secret`], [`strip_service_account`], [`strip_namespace`]) to what the
//! decisions need before it is stored. A labelled junk Secret costs a few hundred bytes,
//! whatever its size on the server.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;

use super::{Error, PULL_SECRETS_ANNOTATION};
use crate::secret::{
    DATA_HASH_ANNOTATION, EXPIRES_AT_ANNOTATION, MANAGED_BY_LABEL, OWNER_NAME_ANNOTATION,
    OWNER_NAMESPACE_LABEL, OWNER_UID_LABEL,
};

/// Reflector stores the reconciles read.
#[derive(Clone)]
pub struct Caches {
    /// Metadata of the Secrets with the managed-by label and the image-pull type.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// Namespace metadata (the fan-out candidates). `None` for an operator watching one
    /// namespace: it cannot fan out.
    pub namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// ServiceAccounts, cut down to their names, `imagePullSecrets` and our annotation.
    pub service_accounts: Store<ServiceAccount>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Builds the caches over these stores; [`Caches::ready`] resolves once all of them
    /// hold their initial list.
    ///
    /// (One task waits on the stores and publishes readiness on a watch channel: a
    /// kube-runtime 5 store wakes only its most recent waiter, and many reconciles wait.)
    pub fn new(
        secrets: Store<PartialObjectMeta<Secret>>,
        namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
        service_accounts: Store<ServiceAccount>,
    ) -> Self {
        let (tx, ready) = tokio::sync::watch::channel(false);
        let (s, n, a) = (
            secrets.clone(),
            namespaces.clone(),
            service_accounts.clone(),
        );
        tokio::spawn(async move {
            let _ = s.wait_until_ready().await;
            if let Some(n) = n {
                let _ = n.wait_until_ready().await;
            }
            let _ = a.wait_until_ready().await;
            let _ = tx.send(true);
        });
        Self {
            secrets,
            namespaces,
            service_accounts,
            ready,
        }
    }

    /// Waits (at most 30 s) until every store has its initial list, so that a reconcile
    /// never mistakes an unlisted namespace or Secret for an absent one.
    ///
    /// # Errors
    /// [`Error::CachesNotReady`] when the watches have not listed in time.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::CachesNotReady),
        }
    }
}

fn keep_only(map: &mut Option<BTreeMap<String, String>>, keys: &[&str]) {
    if let Some(m) = map {
        m.retain(|k, _| keys.contains(&k.as_str()));
        if m.is_empty() {
            *map = None;
        }
    }
}

/// Cuts a cached Secret's metadata down to what ownership and intactness are decided on:
/// name, namespace, uid, resourceVersion, deletionTimestamp, the operator's own labels and
/// annotations, and controller ownerReferences.
pub fn strip_secret(s: &mut PartialObjectMeta<Secret>) {
    let m = &mut s.metadata;
    keep_only(
        &mut m.labels,
        &[
            MANAGED_BY_LABEL,
            OWNER_UID_LABEL,
            OWNER_NAMESPACE_LABEL,
            OWNER_NAME_ANNOTATION,
        ],
    );
    keep_only(
        &mut m.annotations,
        &[
            OWNER_NAME_ANNOTATION,
            DATA_HASH_ANNOTATION,
            EXPIRES_AT_ANNOTATION,
        ],
    );
    if let Some(refs) = &mut m.owner_references {
        refs.retain(|r| r.controller == Some(true));
    }
    m.managed_fields = None;
    m.finalizers = None;
    m.generate_name = None;
    m.creation_timestamp = None;
}

/// Cuts a cached ServiceAccount down to its names, `imagePullSecrets` and the operator's
/// record of the entries it added.
pub fn strip_service_account(sa: &mut ServiceAccount) {
    let m = &mut sa.metadata;
    m.labels = None;
    keep_only(&mut m.annotations, &[PULL_SECRETS_ANNOTATION]);
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
    sa.secrets = None;
}

/// Cuts cached Namespace metadata down to what fan-out plugins see (name, labels,
/// annotations) and whether it is terminating.
pub fn strip_namespace(ns: &mut PartialObjectMeta<Namespace>) {
    let m = &mut ns.metadata;
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    #[test]
    fn cached_secrets_keep_only_what_decisions_need() {
        let big = "x".repeat(200_000);
        let mut s = PartialObjectMeta::<Secret> {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("apps".into()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.into(), "ecr-token-refresh".into()),
                    ("team".into(), "a".into()),
                ])),
                annotations: Some(BTreeMap::from([
                    (DATA_HASH_ANNOTATION.into(), "abc".into()),
                    ("junk".into(), big),
                ])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..Default::default()
            },
            ..Default::default()
        };
        strip_secret(&mut s);
        let m = &s.metadata;
        assert_eq!(m.labels.as_ref().unwrap().len(), 1);
        assert_eq!(m.annotations.as_ref().unwrap().len(), 1);
        assert!(m.managed_fields.is_none());
        assert!(serde_json::to_vec(&s).unwrap().len() < 1024);
    }
}
