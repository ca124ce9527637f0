//! Where a resource's Secrets may go: fan-out candidates and authority. Pure functions
//! over cached objects.

use std::collections::BTreeSet;

use super::caches::CachedNamespace;

use crate::policy::{
    AllowedNamespaces, CrInfo, NamespaceInfo, Policies, PolicyError, PolicySelection,
};
use crate::secret::SecretTarget;

/// The Secrets a resource should have, as its policies decide: the namespaces the fan-out
/// policy chooses among [`candidates`] (only `own` unless `fanout_sources` lists it; the
/// fan-out policy is asked only when it needs candidates), each with the name the naming
/// policy gives. `namespaces` are the cluster's Namespaces (the watch cache, or a file for
/// `render`); `None` when unknown.
///
/// # Errors
/// The first [`PolicyError`] of a policy (it names the plugin and hook).
pub async fn resolve(
    policies: &Policies,
    selection: &PolicySelection,
    info: &CrInfo,
    own: &str,
    namespaces: Option<&[std::sync::Arc<CachedNamespace>]>,
    fanout_sources: &BTreeSet<String>,
) -> Result<Vec<SecretTarget>, PolicyError> {
    let chosen = if policies.needs_candidates(selection) {
        let (candidates, allowed) = candidates(own, namespaces, fanout_sources);
        policies
            .select_namespaces(selection, info, &candidates, &allowed)
            .await?
    } else {
        vec![own.to_string()]
    };
    let mut targets = Vec::with_capacity(chosen.len());
    for (i, namespace) in chosen.into_iter().enumerate() {
        // The first name is asked twice: a plugin that answers differently is refused.
        let name = if i == 0 {
            policies
                .secret_name_checked(selection, info, &namespace)
                .await?
        } else {
            policies.secret_name(selection, info, &namespace).await?
        };
        targets.push(SecretTarget { namespace, name });
    }
    Ok(targets)
}

/// The namespaces a resource may choose from, and may write into.
///
/// A resource whose namespace is in `fanout_sources` (the cluster owner's configuration)
/// gets every namespace that is not terminating; any other resource gets only its own,
/// whatever its fan-out plugin would like.
pub fn candidates(
    own: &str,
    namespaces: Option<&[std::sync::Arc<CachedNamespace>]>,
    fanout_sources: &BTreeSet<String>,
) -> (Vec<NamespaceInfo>, AllowedNamespaces) {
    let info = |ns: &CachedNamespace| NamespaceInfo {
        name: ns.name.to_string(),
        labels: ns.label_map(),
        annotations: ns.annotation_map(),
    };
    let live = |ns: &&std::sync::Arc<CachedNamespace>| !ns.terminating;
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
                        .find(|ns| *ns.name == *own)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ns(name: &str, terminating: bool) -> Arc<CachedNamespace> {
        Arc::new(CachedNamespace {
            name: name.into(),
            labels: Box::new([("team".into(), name.into())]),
            terminating,
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
}
