//! What triggers a reconcile: changes made by users or the cluster, never the operator's
//! own writes.
//!
//! - A resource triggers on what it asks for: its generation (spec), labels and
//!   annotations (plugins see them) and deletion — not on status writes.
//! - A managed Secret triggers its owner (by the owner-uid label) when it is in the owner's
//!   namespace or is one the operator wrote for it — and not when the change is the
//!   operator's own write coming back. Forged labels elsewhere trigger nothing.
//! - A ServiceAccount triggers the resources that name it (and could serve its namespace),
//!   or whose entries it holds; a Namespace triggers the resources that fan out, and those
//!   in it.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};

use super::Memory;
use super::apply::added_pull_secrets;
use crate::api::ECRTokenRefresh;
use crate::secret::{
    OWNER_NAME_ANNOTATION, OWNER_NAMESPACE_LABEL, OWNER_UID_LABEL, SecretFacts, SecretTarget,
};

/// The predicate of the resource watch: a hash of what a user changes (generation,
/// labels, annotations, deletion), so status writes pass unnoticed.
pub fn resource_changed(cr: &ECRTokenRefresh) -> Option<u64> {
    let mut h = DefaultHasher::new();
    cr.metadata.generation.hash(&mut h);
    cr.metadata.deletion_timestamp.is_some().hash(&mut h);
    cr.labels().hash(&mut h);
    cr.annotations().hash(&mut h);
    Some(h.finish())
}

/// Maps a managed Secret to the resources that should look at it: the one its owner labels
/// name (when the Secret is in its namespace or is one the operator wrote for it), and the
/// one the operator wrote it for (whose copy it was, even if someone relabelled it).
pub fn secret_owner(
    crs: Store<ECRTokenRefresh>,
    memory: Arc<Memory>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<ECRTokenRefresh>> + Send + Sync + 'static {
    move |s| {
        let target = SecretTarget {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
        };
        let rv = s.resource_version().unwrap_or_default();
        if memory.is_own_write(&target, &rv) {
            return Vec::new();
        }
        let by_uid = |uid: &str| {
            crs.state()
                .into_iter()
                .find(|cr| cr.metadata.uid.as_deref() == Some(uid))
        };
        let labels = s.labels();
        let labelled = match labels.get(OWNER_UID_LABEL) {
            Some(uid) => by_uid(uid),
            // Written by an earlier version: owner name and namespace labels.
            None => labels
                .get(OWNER_NAME_ANNOTATION)
                .zip(labels.get(OWNER_NAMESPACE_LABEL))
                .and_then(|(name, namespace)| crs.get(&ObjectRef::new(name).within(namespace))),
        };
        let mut out = Vec::new();
        if let Some(owner) = labelled {
            let uid = owner.metadata.uid.clone().unwrap_or_default();
            let own_namespace = owner.namespace().as_deref() == Some(target.namespace.as_str());
            if own_namespace || memory.has_record(&target, &uid) {
                out.push(ObjectRef::from_obj(owner.as_ref()));
            }
        }
        if let Some(writer) = memory.record_owner(&target).and_then(|uid| by_uid(&uid)) {
            let r = ObjectRef::from_obj(writer.as_ref());
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }
}

/// A managed Secret, metadata only.
type SecretMeta = PartialObjectMeta<Secret>;
/// An event of the managed-Secret watch.
pub type SecretEvent = Result<Event<SecretMeta>, watcher::Error>;
/// The Secrets one such event says changed.
pub type ChangedSecrets =
    futures::stream::Iter<std::vec::IntoIter<Result<SecretMeta, watcher::Error>>>;

/// Turns the managed-Secret watch's events into the Secrets that changed: each one applied
/// or deleted (a deletion is noted in `memory`), and, when the watch has listed again
/// (after a 410 Gone or a reconnection), every Secret the operator wrote that the new list
/// no longer has — deleted while the watch was down, which no event reports.
pub fn secret_changes(
    store: super::store::Store<SecretFacts>,
    memory: Arc<Memory>,
) -> impl FnMut(SecretEvent) -> ChangedSecrets + Send + 'static {
    move |event| {
        let out: Vec<Result<SecretMeta, watcher::Error>> = match event {
            Err(e) => vec![Err(e)],
            Ok(Event::Init) => Vec::new(),
            Ok(Event::Apply(s) | Event::InitApply(s)) => vec![Ok(s)],
            Ok(Event::Delete(s)) => {
                let target = SecretTarget {
                    namespace: s.namespace().unwrap_or_default(),
                    name: s.name_any(),
                };
                memory.mark_deleted(&target, s.metadata.uid.as_deref().unwrap_or_default());
                vec![Ok(s)]
            }
            Ok(Event::InitDone) => memory
                .targets()
                .into_iter()
                .filter(|t| store.get(t).is_none())
                .map(|t| {
                    memory.mark_gone(&t);
                    let mut gone = PartialObjectMeta::<Secret>::default();
                    gone.metadata.name = Some(t.name);
                    gone.metadata.namespace = Some(t.namespace);
                    Ok(gone)
                })
                .collect(),
        };
        futures::stream::iter(out)
    }
}

/// Maps a ServiceAccount to the resources that name it and may serve its namespace, or
/// whose `imagePullSecrets` entries it holds.
pub fn service_account_users(
    crs: Store<ECRTokenRefresh>,
    fanout_sources: BTreeSet<String>,
) -> impl Fn(ServiceAccount) -> Vec<ObjectRef<ECRTokenRefresh>> + Send + Sync + 'static {
    move |sa| {
        let name = sa.name_any();
        let namespace = sa.namespace().unwrap_or_default();
        let added = added_pull_secrets(&sa);
        crs.state()
            .into_iter()
            .filter(|cr| {
                let cr_ns = cr.namespace().unwrap_or_default();
                let names_it = cr.spec.service_accounts.contains(&name)
                    && (cr_ns == namespace || fanout_sources.contains(&cr_ns));
                let holds = cr
                    .metadata
                    .uid
                    .as_ref()
                    .is_some_and(|uid| added.values().any(|u| u == uid));
                names_it || holds
            })
            .map(|cr| ObjectRef::from_obj(cr.as_ref()))
            .collect()
    }
}

/// Maps a Namespace to the resources whose targets it may change: those with a fan-out
/// policy, and those in it.
pub fn namespace_users(
    crs: Store<ECRTokenRefresh>,
) -> impl Fn(PartialObjectMeta<Namespace>) -> Vec<ObjectRef<ECRTokenRefresh>> + Send + Sync + 'static
{
    move |ns| {
        let name = ns.name_any();
        crs.state()
            .into_iter()
            .filter(|cr| {
                cr.spec.policy.as_ref().is_some_and(|p| p.fanout.is_some())
                    || cr.namespace().as_deref() == Some(name.as_str())
            })
            .map(|cr| ObjectRef::from_obj(cr.as_ref()))
            .collect()
    }
}

/// Whether `cr` selects plugin `plugin` for any hook.
pub fn selects_plugin(cr: &ECRTokenRefresh, plugin: &str) -> bool {
    cr.spec.policy.as_ref().is_some_and(|p| {
        [&p.naming, &p.fanout, &p.retry]
            .into_iter()
            .any(|n| n.as_deref() == Some(plugin))
    })
}

/// The resources that select `plugin` (`None`: any plugin at all, after missed events).
pub fn plugin_users(
    crs: &Store<ECRTokenRefresh>,
    plugin: Option<&str>,
) -> Vec<Arc<ECRTokenRefresh>> {
    crs.state()
        .into_iter()
        .filter(|cr| match plugin {
            Some(p) => selects_plugin(cr, p),
            None => cr
                .spec
                .policy
                .as_ref()
                .is_some_and(|p| p.naming.is_some() || p.fanout.is_some() || p.retry.is_some()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ECRTokenRefreshSpec;

    fn cr() -> ECRTokenRefresh {
        let mut cr = ECRTokenRefresh::new("creds", ECRTokenRefreshSpec::sample());
        cr.metadata.generation = Some(1);
        cr
    }

    #[test]
    fn status_writes_do_not_change_the_trigger_hash_but_user_changes_do() {
        let a = cr();
        let mut b = a.clone();
        b.status = Some(crate::api::ECRTokenRefreshStatus {
            consecutive_failures: Some(7),
            ..Default::default()
        });
        b.metadata.resource_version = Some("99".into());
        assert_eq!(resource_changed(&a), resource_changed(&b));
        let mut c = a.clone();
        c.metadata.generation = Some(2);
        assert_ne!(resource_changed(&a), resource_changed(&c));
        let mut d = a.clone();
        d.labels_mut().insert("team".into(), "x".into());
        assert_ne!(resource_changed(&a), resource_changed(&d));
        let mut e = a.clone();
        e.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_ne!(resource_changed(&a), resource_changed(&e));
    }

    #[test]
    fn plugin_users_are_the_resources_selecting_it_for_any_hook() {
        use kube::runtime::watcher::Event;
        let with = |name: &str, policy: Option<crate::api::PolicySpec>| {
            let mut c = cr();
            c.metadata.name = Some(name.into());
            c.metadata.namespace = Some("apps".into());
            c.spec.policy = policy;
            c
        };
        let naming = with(
            "naming",
            Some(crate::api::PolicySpec {
                naming: Some("p".into()),
                ..Default::default()
            }),
        );
        let retry = with(
            "retry",
            Some(crate::api::PolicySpec {
                retry: Some("p".into()),
                ..Default::default()
            }),
        );
        let other = with(
            "other",
            Some(crate::api::PolicySpec {
                fanout: Some("q".into()),
                ..Default::default()
            }),
        );
        let builtin = with("builtin", None);
        let (store, mut writer) = kube::runtime::reflector::store();
        for c in [&naming, &retry, &other, &builtin] {
            writer.apply_watcher_event(&Event::Apply(c.clone()));
        }
        let names = |plugin| {
            let mut v: Vec<String> = plugin_users(&store, plugin)
                .iter()
                .map(|c| c.name_any())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(Some("p")), ["naming", "retry"]);
        assert_eq!(names(Some("q")), ["other"]);
        assert!(names(Some("r")).is_empty());
        assert_eq!(names(None), ["naming", "other", "retry"]);
    }
}
