//! Where a resource's Secrets go: fan-out candidates and authority, stale copies, and the
//! ServiceAccounts to update. Pure functions over cached objects.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use crate::api::ECRTokenRefresh;
use crate::policy::{AllowedNamespaces, NamespaceInfo};
use crate::secret::{self, Ownership, SecretTarget};

/// The namespaces a resource may choose from, and may write into.
///
/// A resource whose namespace is in `fanout_sources` (the cluster owner's configuration)
/// gets every namespace that is not terminating; any other resource gets only its own,
/// whatever its fan-out plugin would like.
pub fn candidates(
    own: &str,
    namespaces: Option<&[std::sync::Arc<PartialObjectMeta<Namespace>>]>,
    fanout_sources: &BTreeSet<String>,
) -> (Vec<NamespaceInfo>, AllowedNamespaces) {
    let info = |ns: &PartialObjectMeta<Namespace>| NamespaceInfo {
        name: ns.name_any(),
        labels: ns.labels().clone(),
        annotations: ns.annotations().clone(),
    };
    let live = |ns: &&std::sync::Arc<PartialObjectMeta<Namespace>>| {
        ns.metadata.deletion_timestamp.is_none()
    };
    match namespaces {
        Some(all) if fanout_sources.contains(own) => {
            let mut list: Vec<NamespaceInfo> = all.iter().filter(live).map(|ns| info(ns)).collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            (list, AllowedNamespaces::Any)
        }
        _ => {
            let mine = namespaces
                .and_then(|all| {
                    all.iter()
                        .filter(live)
                        .find(|ns| ns.name_any() == own)
                        .map(|ns| info(ns))
                })
                .unwrap_or_else(|| NamespaceInfo::named(own));
            (
                vec![mine],
                AllowedNamespaces::Only(BTreeSet::from([own.to_string()])),
            )
        }
    }
}

/// Secrets of `owner` (by the owner labels) in `cached` that are not among `targets`.
pub fn stale<'a>(
    cached: impl IntoIterator<Item = &'a Secret>,
    owner: &ECRTokenRefresh,
    targets: &[SecretTarget],
) -> Vec<SecretTarget> {
    let wanted: BTreeSet<&SecretTarget> = targets.iter().collect();
    let mut out: Vec<SecretTarget> = cached
        .into_iter()
        .filter(|s| secret::ownership(Some(s), owner) == Ownership::Ours)
        .map(|s| SecretTarget {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
        })
        .filter(|t| !wanted.contains(t))
        .collect();
    out.sort();
    out
}

/// For each served target, the named ServiceAccounts that exist but do not list the
/// Secret in `imagePullSecrets` yet: `(namespace, service account, secret name)`.
/// ServiceAccounts that do not exist yet are skipped: their creation triggers a reconcile.
pub fn missing_pull_secrets(
    served: &[&SecretTarget],
    service_accounts: &[String],
    existing: &BTreeMap<(String, String), ServiceAccount>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for target in served {
        for sa_name in service_accounts {
            let Some(sa) = existing.get(&(target.namespace.clone(), sa_name.clone())) else {
                continue;
            };
            let listed = sa
                .image_pull_secrets
                .as_ref()
                .is_some_and(|l| l.iter().any(|r| r.name == target.name));
            if !listed {
                out.push((
                    target.namespace.clone(),
                    sa_name.clone(),
                    target.name.clone(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::LocalObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::sync::Arc;

    fn ns(name: &str, terminating: bool) -> Arc<PartialObjectMeta<Namespace>> {
        Arc::new(PartialObjectMeta::<Namespace> {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("team".to_string(), name.to_string())])),
                deletion_timestamp: terminating.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn only_permitted_resources_see_other_namespaces_and_terminating_ones_are_skipped() {
        let all = vec![ns("apps", false), ns("b", false), ns("gone", true)];
        let sources = BTreeSet::from(["apps".to_string()]);
        let (c, allowed) = candidates("apps", Some(&all), &sources);
        assert_eq!(
            c.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["apps", "b"]
        );
        assert_eq!(c[1].labels["team"], "b");
        assert_eq!(allowed, AllowedNamespaces::Any);

        let (c, allowed) = candidates("b", Some(&all), &sources);
        assert_eq!(c.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(allowed.allows("b") && !allowed.allows("apps"));

        // A namespace-scoped operator has no namespace cache: its own namespace only.
        let (c, _) = candidates("apps", None, &sources);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn pull_secret_entries_are_added_only_where_missing_and_the_account_exists() {
        let sa = |names: &[&str]| ServiceAccount {
            image_pull_secrets: Some(
                names
                    .iter()
                    .map(|n| LocalObjectReference {
                        name: n.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let existing = BTreeMap::from([
            (("a".to_string(), "default".to_string()), sa(&["other"])),
            (
                ("b".to_string(), "default".to_string()),
                sa(&["other", "creds"]),
            ),
        ]);
        let ta = SecretTarget {
            namespace: "a".into(),
            name: "creds".into(),
        };
        let tb = SecretTarget {
            namespace: "b".into(),
            name: "creds".into(),
        };
        let tc = SecretTarget {
            namespace: "c".into(),
            name: "creds".into(),
        };
        let missing = missing_pull_secrets(&[&ta, &tb, &tc], &["default".to_string()], &existing);
        assert_eq!(
            missing,
            vec![("a".to_string(), "default".to_string(), "creds".to_string())]
        );
    }
}
