//! The watch caches reconciles read instead of asking the API server, and what they keep.
//!
//! Memory must stay flat whatever tenants create: the Secret watch is metadata-only and
//! selected by the managed-by label and the image-pull type, and every cached object is
//! cut down ([`strip_secret`], [`strip_service_account`], [`strip_namespace`]) to what the
//! decisions need before it is stored. A labelled junk Secret costs a few hundred bytes,
//! whatever its size on the server. The managed-Secret cache keeps not even the stripped
//! metadata but its [`SecretFacts`] ([`cache_secrets`]): at 5,000 Secrets the maps of
//! labels and annotations alone would be about 5 MB.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store as KubeStore;
use kube::runtime::watcher::{self, Event};

use super::store::{ObjectKey, Store, Writer};
use super::{Error, PULL_SECRETS_ANNOTATION};
use crate::intern::intern;
use crate::secret::{
    DATA_HASH_ANNOTATION, EXPIRES_AT_ANNOTATION, MANAGED_BY_LABEL, OWNER_NAME_ANNOTATION,
    OWNER_NAMESPACE_LABEL, OWNER_UID_LABEL, SecretFacts,
};

/// The watch caches the reconciles read: managed Secrets and Namespaces in the controller's
/// own [`Store`]s (each object its own key), ServiceAccounts in a kube-runtime reflector
/// store.
#[derive(Clone)]
pub struct Caches {
    /// What the metadata of each Secret with the managed-by label and the image-pull type
    /// says ([`cache_secrets`]).
    pub secrets: Store<SecretFacts>,
    /// The Namespaces (the fan-out candidates). `None` for an operator watching one
    /// namespace: it cannot fan out.
    pub namespaces: Option<Store<CachedNamespace>>,
    /// ServiceAccounts, cut down to their names, `imagePullSecrets` and our annotation.
    pub service_accounts: KubeStore<ServiceAccount>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Builds the caches over these stores; [`Caches::ready`] resolves once all of them
    /// hold their initial list.
    ///
    /// (One task waits on the stores and publishes readiness on a watch channel: a
    /// kube-runtime 5 store wakes only its most recent waiter, and many reconciles wait.)
    pub fn new(
        secrets: Store<SecretFacts>,
        namespaces: Option<Store<CachedNamespace>>,
        service_accounts: KubeStore<ServiceAccount>,
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

/// A [`SecretFacts`] is cached like the Secret it describes: keyed by namespace and name.
impl ObjectKey for SecretFacts {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

/// Keeps the managed-Secret cache (`writer`'s store) up to date with the managed-Secret
/// watch, each Secret as its [`SecretFacts`], and passes the events on unchanged.
pub fn cache_secrets<S>(
    events: S,
    writer: Writer<SecretFacts>,
) -> impl Stream<Item = watcher::Result<Event<PartialObjectMeta<Secret>>>> + Send
where
    S: Stream<Item = watcher::Result<Event<PartialObjectMeta<Secret>>>> + Send,
{
    cache_as(events, writer, |s| SecretFacts::from_meta(&s.metadata))
}

/// Keeps the Namespace cache (`writer`'s store) up to date with the Namespace watch, each
/// Namespace as a [`CachedNamespace`], and passes the events on unchanged.
pub fn cache_namespaces<S>(
    events: S,
    writer: Writer<CachedNamespace>,
) -> impl Stream<Item = watcher::Result<Event<PartialObjectMeta<Namespace>>>> + Send
where
    S: Stream<Item = watcher::Result<Event<PartialObjectMeta<Namespace>>>> + Send,
{
    cache_as(events, writer, |ns| {
        CachedNamespace::from_meta(&ns.metadata)
    })
}

/// Applies each event of `events` to `writer`'s store with every object as `cached` makes
/// it, then passes the event on unchanged (after the store has it, as kube's `reflect`
/// does, so triggers read a store that already holds the change).
fn cache_as<K, C, S>(
    events: S,
    mut writer: Writer<C>,
    cached: fn(&K) -> C,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
    C: ObjectKey + Send + Sync + 'static,
    K: Send,
{
    events.map(move |event| {
        if let Ok(event) = &event {
            writer.apply(match event {
                Event::Init => Event::Init,
                Event::InitApply(o) => Event::InitApply(cached(o)),
                Event::InitDone => Event::InitDone,
                Event::Apply(o) => Event::Apply(cached(o)),
                Event::Delete(o) => Event::Delete(cached(o)),
            });
        }
        event
    })
}

/// A Namespace as the fan-out candidate cache keeps it: what fan-out plugins see (name,
/// labels, annotations) and whether it is terminating. Labels and annotations are sorted
/// pairs, not maps: a map's smallest node is 544 bytes, most Namespaces have one or two
/// labels, and a cluster may have thousands of Namespaces. Names, keys and values are
/// [interned](crate::intern): thousands of Namespaces labelled alike share one copy of
/// each label, and a Namespace's name is shared with the Secrets cached in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedNamespace {
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `metadata.labels`, sorted by key.
    pub labels: Box<[(Arc<str>, Arc<str>)]>,
    /// `metadata.annotations`, sorted by key.
    pub annotations: Box<[(Arc<str>, Arc<str>)]>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

impl CachedNamespace {
    /// The parts of `meta` (of a Namespace) the cache keeps.
    pub fn from_meta(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        let pairs = |m: &Option<BTreeMap<String, String>>| {
            m.iter()
                .flatten()
                .map(|(k, v)| (intern(k), intern(v)))
                .collect()
        };
        Self {
            name: intern(meta.name.as_deref().unwrap_or_default()),
            labels: pairs(&meta.labels),
            annotations: pairs(&meta.annotations),
            terminating: meta.deletion_timestamp.is_some(),
        }
    }

    /// The labels as a map.
    pub fn label_map(&self) -> BTreeMap<String, String> {
        to_map(&self.labels)
    }

    /// The annotations as a map.
    pub fn annotation_map(&self) -> BTreeMap<String, String> {
        to_map(&self.annotations)
    }
}

fn to_map(pairs: &[(Arc<str>, Arc<str>)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A [`CachedNamespace`] is cached like a Namespace: by name (cluster-scoped).
impl ObjectKey for CachedNamespace {
    fn key(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

/// Keeps only the entries of `map` whose key is one of `keys` and whose value is at most
/// as long as that key allows (a longer value is not one the operator wrote: dropped, so
/// a tenant cannot grow the cache through it).
fn keep_only(map: &mut Option<BTreeMap<String, String>>, keys: &[(&str, usize)]) {
    if let Some(m) = map {
        m.retain(|k, v| keys.iter().any(|(key, max)| k == key && v.len() <= *max));
        if m.is_empty() {
            *map = None;
        }
    }
}

/// Most `imagePullSecrets` entries of a ServiceAccount kept in the cache; a longer list is
/// read from the API server when needed (see [`TRUNCATED_ANNOTATION`]).
pub const MAX_CACHED_PULL_SECRETS: usize = 64;
/// Longest record of the operator's `imagePullSecrets` entries kept in the cache, in bytes.
pub const MAX_CACHED_RECORD: usize = 16 * 1024;
/// Marks a cached ServiceAccount whose `imagePullSecrets` or record were too long to keep
/// (only on the cached copy, never written).
pub const TRUNCATED_ANNOTATION: &str = "ecr.aws.edenlab.io/cache-truncated";

/// Cuts a cached Secret's metadata down to what ownership and intactness are decided on:
/// name, namespace, uid, resourceVersion, deletionTimestamp, the operator's own labels and
/// annotations, and controller ownerReferences.
pub fn strip_secret(s: &mut PartialObjectMeta<Secret>) {
    let m = &mut s.metadata;
    keep_only(
        &mut m.labels,
        &[
            (MANAGED_BY_LABEL, 63),
            (OWNER_UID_LABEL, 63),
            (OWNER_NAMESPACE_LABEL, 63),
            (OWNER_NAME_ANNOTATION, 63),
        ],
    );
    keep_only(
        &mut m.annotations,
        &[
            (OWNER_NAME_ANNOTATION, 253),
            (DATA_HASH_ANNOTATION, 64),
            (EXPIRES_AT_ANNOTATION, 64),
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
///
/// What a tenant controls stays bounded: a record longer than [`MAX_CACHED_RECORD`] or a
/// list longer than [`MAX_CACHED_PULL_SECRETS`] is dropped from the cached copy, which is
/// marked with [`TRUNCATED_ANNOTATION`] so that the ServiceAccount is read in full when a
/// resource needs it.
pub fn strip_service_account(sa: &mut ServiceAccount) {
    let m = &mut sa.metadata;
    m.labels = None;
    let oversized_record = m
        .annotations
        .as_ref()
        .and_then(|a| a.get(PULL_SECRETS_ANNOTATION))
        .is_some_and(|v| v.len() > MAX_CACHED_RECORD);
    keep_only(
        &mut m.annotations,
        &[(PULL_SECRETS_ANNOTATION, MAX_CACHED_RECORD)],
    );
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
    sa.secrets = None;
    let oversized_list = sa
        .image_pull_secrets
        .as_ref()
        .is_some_and(|l| l.len() > MAX_CACHED_PULL_SECRETS);
    if oversized_list {
        sa.image_pull_secrets = None;
    }
    if oversized_record || oversized_list {
        sa.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(TRUNCATED_ANNOTATION.to_string(), "true".to_string());
    }
}

/// Cuts Namespace metadata down to what fan-out plugins see (name, labels, annotations)
/// and whether it is terminating, before it reaches the cache ([`CachedNamespace`]) and
/// the triggers.
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
    use kube::ResourceExt;

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

        // Our own keys with values no operator write has: dropped too.
        let mut forged = PartialObjectMeta::<Secret>::default();
        forged.metadata.annotations = Some(BTreeMap::from([
            (DATA_HASH_ANNOTATION.into(), "a".repeat(200_000)),
            (EXPIRES_AT_ANNOTATION.into(), "b".repeat(200_000)),
            (OWNER_NAME_ANNOTATION.into(), "c".repeat(200_000)),
        ]));
        strip_secret(&mut forged);
        assert!(forged.metadata.annotations.is_none());
    }

    #[tokio::test]
    async fn the_secret_cache_keeps_facts_and_passes_every_event_on() {
        let secret = |name: &str, rv: &str, hash: &str| {
            let mut s = PartialObjectMeta::<Secret> {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("team-a".into()),
                    uid: Some(format!("uid-{name}")),
                    resource_version: Some(rv.into()),
                    labels: Some(BTreeMap::from([
                        (MANAGED_BY_LABEL.into(), "ecr-token-refresh".into()),
                        (OWNER_UID_LABEL.into(), "owner-1".into()),
                        (OWNER_NAMESPACE_LABEL.into(), "platform".into()),
                    ])),
                    annotations: Some(BTreeMap::from([
                        (OWNER_NAME_ANNOTATION.into(), "pull".into()),
                        (DATA_HASH_ANNOTATION.into(), hash.into()),
                        (EXPIRES_AT_ANNOTATION.into(), "2030-01-01T00:00:00Z".into()),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            };
            strip_secret(&mut s);
            s
        };
        let (store, writer) = super::super::store::store::<SecretFacts>();
        let events = vec![
            Event::Init,
            Event::InitApply(secret("a", "1", "h1")),
            Event::InitDone,
            Event::Apply(secret("b", "2", "h2")),
            Event::Apply(secret("a", "3", "h3")),
            Event::Delete(secret("b", "2", "h2")),
        ];
        let passed: Vec<_> = cache_secrets(futures::stream::iter(events.clone()).map(Ok), writer)
            .collect()
            .await;
        let names = |e: &Event<PartialObjectMeta<Secret>>| match e {
            Event::Init => "init".to_string(),
            Event::InitDone => "done".to_string(),
            Event::InitApply(s) | Event::Apply(s) => format!("apply {}", s.name_any()),
            Event::Delete(s) => format!("delete {}", s.name_any()),
        };
        let passed: Vec<String> = passed.iter().map(|e| names(e.as_ref().unwrap())).collect();
        let sent: Vec<String> = events.iter().map(names).collect();
        assert_eq!(passed, sent);

        assert_eq!(store.state().len(), 1);
        let a = store.get(&("team-a", "a")).unwrap();
        let owner = crate::secret::Owner {
            name: "pull".into(),
            namespace: "platform".into(),
            uid: "owner-1".into(),
        };
        let meta = a.relative_to(&owner);
        assert_eq!(meta.resource_version, "3");
        assert_eq!(meta.data_hash.as_deref(), Some("h3"));
        assert!(meta.ours && meta.metadata_intact);
        assert_eq!(
            meta,
            crate::secret::SecretMeta::read(&secret("a", "3", "h3").metadata, &owner)
        );
        assert!(store.get(&("team-a", "b")).is_none());

        // Another copy of the same resource shares one heap copy of its labels and
        // annotations and of its namespace name (what keeps 5,000 copies small); a copy
        // someone edited holds marks of its own.
        let c = SecretFacts::from_meta(&secret("c", "4", "h3").metadata);
        assert!(Arc::ptr_eq(&a.marks, &c.marks));
        let edited = SecretFacts::from_meta(&secret("d", "5", "h4").metadata);
        assert!(!Arc::ptr_eq(&a.marks, &edited.marks));
        assert_eq!(edited.marks.data_hash.as_deref(), Some("h4"));
        assert!(Arc::ptr_eq(&a.namespace, &c.namespace));
    }

    #[tokio::test]
    async fn the_namespace_cache_keeps_names_labels_annotations_and_termination() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let ns = |name: &str, terminating: bool| PartialObjectMeta::<Namespace> {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some("uid".into()),
                resource_version: Some("7".into()),
                labels: Some(BTreeMap::from([
                    ("z".into(), "1".into()),
                    ("a".into(), "2".into()),
                ])),
                annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
                deletion_timestamp: terminating.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            ..Default::default()
        };
        let (store, writer) = super::super::store::store::<CachedNamespace>();
        let events = vec![
            Event::Init,
            Event::InitApply(ns("team-a", false)),
            Event::InitApply(ns("team-b", false)),
            Event::InitDone,
            Event::Apply(ns("team-b", true)),
            Event::Delete(ns("team-a", false)),
        ];
        let passed: Vec<_> = cache_namespaces(futures::stream::iter(events).map(Ok), writer)
            .collect()
            .await;
        assert_eq!(passed.len(), 6);
        assert_eq!(store.state().len(), 1);
        let b = store.get(&("", "team-b")).unwrap();
        assert_eq!(
            *b,
            CachedNamespace {
                name: "team-b".into(),
                labels: Box::new([("a".into(), "2".into()), ("z".into(), "1".into())]),
                annotations: Box::new([("note".into(), "x".into())]),
                terminating: true,
            }
        );
        // Namespaces labelled alike share one copy of each label.
        let other = CachedNamespace::from_meta(&ns("team-c", false).metadata);
        for ((k1, v1), (k2, v2)) in b.labels.iter().zip(other.labels.iter()) {
            assert!(Arc::ptr_eq(k1, k2) && Arc::ptr_eq(v1, v2));
        }
        assert_eq!(b.label_map(), ns("team-b", true).metadata.labels.unwrap());
    }

    #[test]
    fn cached_service_accounts_stay_small_whatever_a_tenant_writes() {
        use k8s_openapi::api::core::v1::LocalObjectReference;
        let mut sa = ServiceAccount::default();
        sa.metadata.annotations = Some(BTreeMap::from([(
            PULL_SECRETS_ANNOTATION.into(),
            "x".repeat(200_000),
        )]));
        sa.image_pull_secrets = Some(
            (0..1000)
                .map(|i| LocalObjectReference {
                    name: format!("s{i}"),
                })
                .collect(),
        );
        strip_service_account(&mut sa);
        assert!(serde_json::to_vec(&sa).unwrap().len() < 1024);
        assert_eq!(sa.annotations()[TRUNCATED_ANNOTATION], "true");
        // An ordinary one is kept whole and unmarked.
        let mut small = ServiceAccount {
            image_pull_secrets: Some(vec![LocalObjectReference { name: "a".into() }]),
            ..Default::default()
        };
        strip_service_account(&mut small);
        assert_eq!(small.image_pull_secrets.as_ref().unwrap().len(), 1);
        assert!(small.metadata.annotations.is_none());
    }
}
