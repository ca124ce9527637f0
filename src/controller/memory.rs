//! What the controller remembers between reconciles, in memory only: per resource, its
//! consecutive failures and the token its Secrets hold; per Secret it wrote, what it wrote.
//!
//! Both maps are bounded by what the operator owns: entries are added only for resources it
//! reconciles and Secrets it wrote (or verified), and removed when those go away.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::store::ObjectKey;
use crate::ecr::{Credentials, EcrError};
use crate::intern::{Interner, intern};
use crate::object_id::{ResourceVersion, Uid};
use crate::secret::{SecretMeta, SecretTarget};

/// How long after a write the operator's own record of it stands in for the watch cache
/// (which sees the write a moment later). Past that, the cache is the truth: a record
/// never hides a Secret that was deleted while the watch was down.
pub const CACHE_LAG: Duration = Duration::from_secs(10);

/// An edit of a Secret this soon after the operator wrote it means another writer competes
/// for it (e.g. a second operator instance): its repairs back off.
pub const CONTEST_WINDOW: Duration = Duration::from_secs(30);

/// What the operator wrote (or last verified) at one target.
///
/// The owner uid and the annotations written, the same in every copy of one resource, are
/// one [interned](crate::intern::Interner) [`Stamp`] ([`Written::holding`] shares it):
/// 5,000 records hold one copy. The Secret's uid and resourceVersions are held inline
/// ([`crate::object_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Whose Secret it is and what was written in it (shared).
    pub stamp: Arc<Stamp>,
    /// `metadata.uid` of the Secret.
    pub uid: Uid,
    /// Its `metadata.resourceVersion` after the write.
    pub resource_version: ResourceVersion,
    /// Its resourceVersion before the write (what a lagging cache still shows).
    pub previous_version: Option<ResourceVersion>,
    /// When it was written; `None` for a record of a Secret found intact.
    pub written_at: Option<Instant>,
    /// Whether the watch has since seen the Secret deleted.
    pub deleted: bool,
}

/// What the records of one resource's Secrets hold alike: the resource and the annotations
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// `metadata.uid` of the resource the Secret is for.
    pub owner_uid: Box<str>,
    /// The data-hash annotation written.
    pub data_hash: Option<Box<str>>,
    /// The expiry annotation written.
    pub expires_at: Option<Timestamp>,
}

static STAMPS: LazyLock<Interner<Stamp>> = LazyLock::new(Interner::new);

impl Stamp {
    fn shared(self) -> Arc<Stamp> {
        STAMPS.share(self)
    }
}

impl Written {
    /// A record of the Secret with `uid` at `resource_version` (after the write, or as
    /// verified), for the resource with `owner_uid`; not seen deleted.
    ///
    /// Its stamp is shared by [`Written::holding`], which every record made by the
    /// controller goes through: sharing it here as well would put a stamp without
    /// annotations in the table for each record, only to replace it.
    pub fn new(owner_uid: &str, uid: &str, resource_version: &str) -> Self {
        let stamp = Stamp {
            owner_uid: owner_uid.into(),
            data_hash: None,
            expires_at: None,
        };
        Self {
            stamp: Arc::new(stamp),
            uid: Uid::new(uid),
            resource_version: resource_version.into(),
            previous_version: None,
            written_at: None,
            deleted: false,
        }
    }

    /// With the resourceVersion the Secret had before the write.
    pub fn previous(mut self, previous: Option<&str>) -> Self {
        self.previous_version = previous.map(Into::into);
        self
    }

    /// With the data-hash and expiry annotations written (or found).
    pub fn holding(mut self, data_hash: Option<&str>, expires_at: Option<Timestamp>) -> Self {
        let stamp = Stamp {
            owner_uid: self.stamp.owner_uid.clone(),
            data_hash: data_hash.map(Into::into),
            expires_at,
        };
        self.stamp = stamp.shared();
        self
    }

    /// Written at `at` (`None`: verified, not written).
    pub fn at(mut self, at: Option<Instant>) -> Self {
        self.written_at = at;
        self
    }

    fn fresh(&self) -> bool {
        !self.deleted && self.written_at.is_some_and(|t| t.elapsed() < CACHE_LAG)
    }

    /// The metadata a write gave the Secret (while the cache has not seen it yet).
    fn as_meta(&self) -> SecretMeta {
        SecretMeta {
            uid: self.uid.to_string(),
            resource_version: self.resource_version.to_string(),
            ours: true,
            metadata_intact: true,
            data_hash: self.stamp.data_hash.as_deref().map(String::from),
            expires_at: self.stamp.expires_at,
            terminating: false,
        }
    }
}

/// How a cached Secret of ours compares with the record of what the operator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    /// The metadata to decide on (the record's, when the cache lags behind a write).
    pub meta: SecretMeta,
    /// Whether someone else changed or replaced the Secret since the operator wrote or
    /// verified it.
    pub edited: bool,
}

/// A failed token fetch of one resource, remembered so that nothing asks again before its
/// retry is due.
#[derive(Debug, Clone)]
pub struct TokenFailure {
    /// What failed.
    pub error: EcrError,
    /// When the retry is due; `None` when the retry policy gave up (until the spec changes).
    pub retry_at: Option<Timestamp>,
    /// The resource's generation when it failed.
    pub generation: Option<i64>,
}

#[derive(Debug, Default, Clone)]
struct ResourceMemory {
    failures: u32,
    held: Option<Arc<Credentials>>,
    /// After a failed token fetch: the failure, when the retry is due and the generation
    /// it was for. No new fetch is made before then for that generation, whatever triggers
    /// a reconcile.
    token_failure: Option<TokenFailure>,
    /// Until when repairs of edited Secrets wait (another writer competes for them).
    contested_until: Option<Instant>,
}

/// The key of a Secret record: its namespace and name, [interned](crate::intern) (the
/// namespace is shared with the caches, the name with every copy of the same resource).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordKey {
    namespace: Arc<str>,
    name: Arc<str>,
}

impl RecordKey {
    fn of(target: &SecretTarget) -> Self {
        Self {
            namespace: intern(&target.namespace),
            name: intern(&target.name),
        }
    }

    fn target(&self) -> SecretTarget {
        SecretTarget {
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }
}

/// Records are keyed by [`RecordKey`] and looked up by `&SecretTarget` without building
/// a key (the usual `Borrow<dyn Trait>` way to look up a map by a second key type).
impl ObjectKey for RecordKey {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl<'a> Borrow<dyn ObjectKey + 'a> for RecordKey {
    fn borrow(&self) -> &(dyn ObjectKey + 'a) {
        self
    }
}

/// Hashes as its key, like `dyn ObjectKey` (which `Borrow` requires).
impl Hash for RecordKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// `target` as a key of the record map.
fn key(target: &SecretTarget) -> &dyn ObjectKey {
    target
}

/// The controller's memory. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Memory {
    resources: Mutex<HashMap<String, ResourceMemory>>,
    /// Boxed: a hash table keeps about 1.6 slots per entry, and a slot of the record
    /// itself would be 160 bytes (1.3 MB at 5,000 Secrets, against 1.05 MB boxed).
    written: Mutex<HashMap<RecordKey, Box<Written>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Memory {
    /// Consecutive failures of the resource with `uid`.
    pub fn failures(&self, uid: &str) -> u32 {
        lock(&self.resources).get(uid).map_or(0, |r| r.failures)
    }

    /// Sets the consecutive failures of the resource with `uid`.
    pub fn set_failures(&self, uid: &str, failures: u32) {
        lock(&self.resources)
            .entry(uid.to_string())
            .or_default()
            .failures = failures;
    }

    /// One more failure; returns the new count (the attempt number of the next retry).
    pub fn bump_failures(&self, uid: &str) -> u32 {
        let mut map = lock(&self.resources);
        let r = map.entry(uid.to_string()).or_default();
        r.failures = r.failures.saturating_add(1);
        r.failures
    }

    /// The token the Secrets of the resource with `uid` hold.
    pub fn held(&self, uid: &str) -> Option<Arc<Credentials>> {
        lock(&self.resources).get(uid).and_then(|r| r.held.clone())
    }

    /// The last token failure of the resource with `uid`, while its retry is not due yet
    /// (`now` before `retry_at`) and the resource is still at the same `generation`.
    pub fn token_failure(
        &self,
        uid: &str,
        now: Timestamp,
        generation: Option<i64>,
    ) -> Option<TokenFailure> {
        lock(&self.resources)
            .get(uid)
            .and_then(|r| r.token_failure.clone())
            .filter(|f| f.generation == generation && f.retry_at.is_none_or(|at| at > now))
    }

    /// Records a token failure of the resource with `uid` (`None`: a token was obtained,
    /// the failure is over).
    pub fn set_token_failure(&self, uid: &str, failure: Option<TokenFailure>) {
        lock(&self.resources)
            .entry(uid.to_string())
            .or_default()
            .token_failure = failure;
    }

    /// Whether the resource with `uid` backs off from repairing Secrets another writer
    /// keeps changing.
    pub fn contested(&self, uid: &str) -> bool {
        lock(&self.resources)
            .get(uid)
            .and_then(|r| r.contested_until)
            .is_some_and(|t| Instant::now() < t)
    }

    /// Repairs of the resource with `uid` wait until `until` (`None`: they do not).
    pub fn set_contested_until(&self, uid: &str, until: Option<Instant>) {
        lock(&self.resources)
            .entry(uid.to_string())
            .or_default()
            .contested_until = until;
    }

    /// The Secrets written for the resource with `owner_uid` within [`CONTEST_WINDOW`].
    pub fn recently_written(&self, owner_uid: &str) -> std::collections::BTreeSet<SecretTarget> {
        lock(&self.written)
            .iter()
            .filter(|(_, w)| {
                *w.stamp.owner_uid == *owner_uid
                    && w.written_at.is_some_and(|t| t.elapsed() < CONTEST_WINDOW)
            })
            .map(|(k, _)| k.target())
            .collect()
    }

    /// Remembers the token the Secrets of the resource with `uid` hold.
    pub fn set_held(&self, uid: &str, token: Option<Arc<Credentials>>) {
        lock(&self.resources)
            .entry(uid.to_string())
            .or_default()
            .held = token;
    }

    /// Forgets everything about the resource with `uid` and the Secrets written for it.
    pub fn forget_resource(&self, uid: &str) {
        lock(&self.resources).remove(uid);
        lock(&self.written).retain(|_, w| *w.stamp.owner_uid != *uid);
    }

    /// Keeps only the resources for which `keep(uid)` holds (the others were deleted).
    pub fn retain_resources(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.resources).retain(|uid, _| keep(uid));
        lock(&self.written).retain(|_, w| keep(&w.stamp.owner_uid));
    }

    /// Records a write (or a verification, with `written_at: None`).
    pub fn record(&self, target: SecretTarget, written: Written) {
        lock(&self.written).insert(RecordKey::of(&target), Box::new(written));
    }

    /// Forgets the record of `target` (deleted by the operator, or seen deleted).
    pub fn forget_secret(&self, target: &SecretTarget) {
        lock(&self.written).remove(key(target));
    }

    /// Forgets the record of `target` if it is about the Secret with `uid`.
    pub fn forget_secret_uid(&self, target: &SecretTarget, uid: &str) {
        let mut written = lock(&self.written);
        if written.get(key(target)).is_some_and(|w| w.uid == *uid) {
            written.remove(key(target));
        }
    }

    /// Notes that the watch saw the Secret with `uid` at `target` deleted: the record no
    /// longer stands in for it (it still says the operator wrote it, so its owner is told).
    pub fn mark_deleted(&self, target: &SecretTarget, uid: &str) {
        if let Some(w) = lock(&self.written).get_mut(key(target))
            && w.uid == *uid
        {
            w.deleted = true;
        }
    }

    /// Every target the operator wrote or verified and has not seen deleted.
    pub fn targets(&self) -> Vec<SecretTarget> {
        lock(&self.written)
            .iter()
            .filter(|(_, w)| !w.deleted)
            .map(|(k, _)| k.target())
            .collect()
    }

    /// The uid of the resource the operator wrote or verified `target` for, if any.
    pub fn record_owner(&self, target: &SecretTarget) -> Option<String> {
        lock(&self.written)
            .get(key(target))
            .map(|w| w.stamp.owner_uid.to_string())
    }

    /// Notes that the Secret at `target` is gone, whatever its uid (a relist no longer has it).
    pub fn mark_gone(&self, target: &SecretTarget) {
        if let Some(w) = lock(&self.written).get_mut(key(target)) {
            w.deleted = true;
        }
    }

    /// Whether the operator wrote or verified `target` for the resource with `owner_uid`.
    pub fn has_record(&self, target: &SecretTarget, owner_uid: &str) -> bool {
        lock(&self.written)
            .get(key(target))
            .is_some_and(|w| *w.stamp.owner_uid == *owner_uid)
    }

    /// Whether a watch event for `target` at `resource_version` is the operator's own write
    /// coming back (so it triggers nothing).
    pub fn is_own_write(&self, target: &SecretTarget, resource_version: &str) -> bool {
        lock(&self.written)
            .get(key(target))
            .is_some_and(|w| w.written_at.is_some() && *w.resource_version == *resource_version)
    }

    /// What a Secret the cache does not show is, per the record of a write made moments
    /// ago (within [`CACHE_LAG`]).
    pub fn just_written(&self, target: &SecretTarget, owner_uid: &str) -> Option<SecretMeta> {
        lock(&self.written)
            .get(key(target))
            .filter(|w| w.fresh() && *w.stamp.owner_uid == *owner_uid)
            .map(|w| w.as_meta())
    }

    /// The Secrets written for the resource with `owner_uid` moments ago (within
    /// [`CACHE_LAG`]) and not seen deleted: what a lagging cache may not show yet.
    pub fn recent_writes(&self, owner_uid: &str) -> Vec<(SecretTarget, SecretMeta)> {
        lock(&self.written)
            .iter()
            .filter(|(_, w)| *w.stamp.owner_uid == *owner_uid && w.fresh())
            .map(|(k, w)| (k.target(), w.as_meta()))
            .collect()
    }

    /// Compares a cached Secret of ours (`cached`) with the record of `target`: a record
    /// of a write the cache has not caught up with stands in for it; a Secret whose uid or
    /// resourceVersion moved since it was written or verified was edited by someone else.
    /// With no record yet, the Secret as cached is taken as the baseline.
    pub fn recall(&self, target: &SecretTarget, owner_uid: &str, cached: &SecretMeta) -> Recalled {
        let written = lock(&self.written);
        let Some(w) = written
            .get(key(target))
            .filter(|w| *w.stamp.owner_uid == *owner_uid)
        else {
            return Recalled {
                meta: cached.clone(),
                edited: false,
            };
        };
        if w.uid != *cached.uid {
            // Replaced since: a lagging cache (the old object) within the window, else someone
            // deleted and recreated it.
            if w.fresh() {
                return Recalled {
                    meta: w.as_meta(),
                    edited: false,
                };
            }
            return Recalled {
                meta: cached.clone(),
                edited: true,
            };
        }
        if *w.resource_version == *cached.resource_version {
            return Recalled {
                meta: cached.clone(),
                edited: false,
            };
        }
        if w.fresh() && w.previous_version.as_deref() == Some(cached.resource_version.as_str()) {
            return Recalled {
                meta: w.as_meta(),
                edited: false,
            };
        }
        Recalled {
            meta: cached.clone(),
            edited: true,
        }
    }

    /// How many resources and Secret records are held (tests, metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (lock(&self.resources).len(), lock(&self.written).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SecretTarget {
        SecretTarget {
            namespace: "apps".into(),
            name: "creds".into(),
        }
    }

    fn meta(uid: &str, rv: &str, hash: &str) -> SecretMeta {
        SecretMeta {
            uid: uid.into(),
            resource_version: rv.into(),
            ours: true,
            metadata_intact: true,
            data_hash: Some(hash.into()),
            expires_at: None,
            terminating: false,
        }
    }

    fn written(rv: &str, previous: Option<&str>, at: Option<Instant>) -> Written {
        Written::new("owner", "s1", rv)
            .previous(previous)
            .holding(Some("new"), None)
            .at(at)
    }

    #[test]
    fn records_are_found_by_any_equal_target_and_share_interned_names() {
        let m = Memory::default();
        m.record(target(), written("7", None, Some(Instant::now())));
        // Another allocation of the same target finds it; another name does not.
        let again = SecretTarget {
            namespace: String::from("apps"),
            name: "creds".to_string(),
        };
        assert!(m.has_record(&again, "owner"));
        assert!(m.is_own_write(&again, "7"));
        let other = SecretTarget {
            namespace: "apps".into(),
            name: "other".into(),
        };
        assert!(!m.has_record(&other, "owner"));
        assert_eq!(m.targets(), vec![target()]);
        // The key holds the shared copies of its names.
        {
            let written = lock(&m.written);
            let (k, _) = written.iter().next().unwrap();
            assert!(Arc::ptr_eq(&k.namespace, &intern("apps")));
            assert!(Arc::ptr_eq(&k.name, &intern("creds")));
        }
        m.forget_secret(&again);
        assert_eq!(m.sizes().1, 0);
    }

    #[test]
    fn a_record_stays_within_its_memory_budget() {
        // 5,000 of them after a 5,000-namespace fan-out: what is not shared (uid,
        // resourceVersions, when) is inline; a field more shows here first.
        assert!(std::mem::size_of::<Written>() <= 104);
    }

    #[test]
    fn records_of_one_resources_copies_share_one_stamp() {
        let a = Written::new("stamp-owner", "s1", "1").holding(Some("h"), None);
        let b = Written::new("stamp-owner", "s2", "2").holding(Some("h"), None);
        assert!(Arc::ptr_eq(&a.stamp, &b.stamp));
        assert_eq!(a.stamp.owner_uid.as_ref(), "stamp-owner");
        // Another hash (an edited template, a new token) is another stamp.
        let c = Written::new("stamp-owner", "s3", "3").holding(Some("h2"), None);
        assert!(!Arc::ptr_eq(&a.stamp, &c.stamp));
        assert_eq!(c.stamp.data_hash.as_deref(), Some("h2"));
        assert_eq!(c.as_meta().data_hash.as_deref(), Some("h2"));
    }

    #[test]
    fn edits_by_others_are_noticed_and_a_lagging_cache_is_bridged() {
        let m = Memory::default();
        // No record: the cached Secret is the baseline.
        let r = m.recall(&target(), "owner", &meta("s1", "5", "old"));
        assert!(!r.edited);

        m.record(target(), written("7", Some("5"), Some(Instant::now())));
        assert!(m.is_own_write(&target(), "7"));
        assert!(!m.is_own_write(&target(), "8"));
        // The cache still shows the version before the write: the record stands in.
        let r = m.recall(&target(), "owner", &meta("s1", "5", "old"));
        assert!(!r.edited);
        assert_eq!(r.meta.data_hash.as_deref(), Some("new"));
        // The cache caught up.
        assert!(!m.recall(&target(), "owner", &meta("s1", "7", "new")).edited);
        // Someone changed it after the write.
        assert!(m.recall(&target(), "owner", &meta("s1", "9", "new")).edited);
        // Someone replaced it (another uid), long after the write.
        m.record(target(), written("7", Some("5"), None));
        assert!(
            m.recall(&target(), "owner", &meta("s2", "11", "new"))
                .edited
        );
        // A record of another owner says nothing about this one.
        assert!(!m.recall(&target(), "other", &meta("s2", "11", "x")).edited);
    }

    #[test]
    fn a_record_stands_in_for_a_missing_cache_entry_only_briefly() {
        let m = Memory::default();
        m.record(target(), written("7", None, Some(Instant::now())));
        assert!(m.just_written(&target(), "owner").is_some());
        assert!(m.just_written(&target(), "other").is_none());
        // Seen deleted by the watch: no longer stands in, but still names its owner.
        m.mark_deleted(&target(), "s1");
        assert!(m.just_written(&target(), "owner").is_none());
        assert!(m.has_record(&target(), "owner"));
        m.record(
            target(),
            written("7", None, Instant::now().checked_sub(CACHE_LAG * 2)),
        );
        assert!(m.just_written(&target(), "owner").is_none());
    }

    #[test]
    fn forgetting_a_resource_forgets_its_records() {
        let m = Memory::default();
        m.bump_failures("owner");
        m.record(target(), written("7", None, None));
        assert_eq!(m.sizes(), (1, 1));
        m.retain_resources(|uid| uid != "owner");
        assert_eq!(m.sizes(), (0, 0));
    }
}
