//! The watch caches of the two kinds that grow with the cluster (managed Secrets, as
//! [`SecretFacts`](crate::secret::SecretFacts), and Namespaces, as
//! [`CachedNamespace`](super::caches::CachedNamespace)): kube-runtime's reflector store
//! semantics, without its per-object key.
//!
//! kube-runtime's `Store` keys each object by an `ObjectRef`: 96 bytes in the hash table
//! plus its own copies of the name and namespace, next to the object that already holds
//! them. At 5,000 Secrets and 5,500 Namespaces the two tables and those copies were
//! about 2 MB of an idle operator's 9.9 MB of live heap (heaptrack). Here each object is its own key: the table holds one pointer
//! per object, hashed and compared by the object's namespace and name ([`ObjectKey`]).
//!
//! Events apply as a reflector applies them: `Init` starts a new list, `InitApply` adds
//! to it, `InitDone` swaps it in whole (objects gone while the watch was down disappear)
//! and marks the store ready; `Apply` and `Delete` change it at once.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::secret::SecretTarget;

/// An object's namespace and name (`""` for the namespace of a cluster-scoped object):
/// what the caches and the controller's memory find it by. Implemented by the cached
/// types, by [`SecretTarget`] and by `(&str, &str)`, so that a lookup needs no key built.
pub trait ObjectKey {
    /// `(namespace, name)`.
    fn key(&self) -> (&str, &str);
}

impl Hash for dyn ObjectKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn ObjectKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn ObjectKey + '_ {}

impl ObjectKey for SecretTarget {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl ObjectKey for (&str, &str) {
    fn key(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

/// A cached object in the table: hashed and compared by its [`ObjectKey`].
struct Entry<T>(Arc<T>);

impl<T: ObjectKey> Hash for Entry<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

impl<T: ObjectKey> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl<T: ObjectKey> Eq for Entry<T> {}

impl<'a, T: ObjectKey + 'a> Borrow<dyn ObjectKey + 'a> for Entry<T> {
    fn borrow(&self) -> &(dyn ObjectKey + 'a) {
        &*self.0
    }
}

type Table<T> = HashSet<Entry<T>>;

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The read side: cheap to clone, shared by every reconcile.
pub struct Store<T> {
    table: Arc<RwLock<Table<T>>>,
    ready: watch::Receiver<bool>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            table: Arc::clone(&self.table),
            ready: self.ready.clone(),
        }
    }
}

/// The writer went away before the store held its first list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watch feeding the store stopped before its first list")]
pub struct WriterDropped;

impl<T: ObjectKey> Store<T> {
    /// The object at `key` (e.g. a [`SecretTarget`], or `("", name)` for a Namespace).
    pub fn get(&self, key: &dyn ObjectKey) -> Option<Arc<T>> {
        read(&self.table).get(key).map(|e| Arc::clone(&e.0))
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<T>> {
        read(&self.table).iter().map(|e| Arc::clone(&e.0)).collect()
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        read(&self.table).len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the store holds its first complete list.
    ///
    /// # Errors
    /// [`WriterDropped`] when the watch stopped before that.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| WriterDropped)
    }
}

/// The write side, fed by one watch's events ([`Writer::apply`]).
pub struct Writer<T> {
    table: Arc<RwLock<Table<T>>>,
    /// The list being received (between `Init` and `InitDone`).
    listing: Option<Table<T>>,
    ready: watch::Sender<bool>,
}

impl<T: ObjectKey> Writer<T> {
    /// Applies one watch event, as a kube-runtime reflector would.
    pub fn apply(&mut self, event: Event<T>) {
        match event {
            Event::Init => self.listing = Some(Table::new()),
            Event::InitApply(o) => {
                let entry = Entry(Arc::new(o));
                match &mut self.listing {
                    Some(list) => {
                        list.replace(entry);
                    }
                    // An object listed without `Init` (not sent by kube's watcher): as an
                    // `Apply`.
                    None => {
                        write(&self.table).replace(entry);
                    }
                }
            }
            Event::InitDone => {
                if let Some(mut list) = self.listing.take() {
                    list.shrink_to_fit();
                    *write(&self.table) = list;
                }
                self.ready.send_replace(true);
            }
            Event::Apply(o) => {
                write(&self.table).replace(Entry(Arc::new(o)));
            }
            Event::Delete(o) => {
                write(&self.table).remove(&o as &dyn ObjectKey);
            }
        }
    }
}

/// A new, empty store (not ready) and its writer.
pub fn store<T>() -> (Store<T>, Writer<T>) {
    let table = Arc::new(RwLock::new(Table::new()));
    let (tx, rx) = watch::channel(false);
    (
        Store {
            table: Arc::clone(&table),
            ready: rx,
        },
        Writer {
            table,
            listing: None,
            ready: tx,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[derive(Debug, PartialEq)]
    struct Obj {
        ns: &'static str,
        name: &'static str,
        v: u32,
    }

    impl ObjectKey for Obj {
        fn key(&self) -> (&str, &str) {
            (self.ns, self.name)
        }
    }

    fn obj(ns: &'static str, name: &'static str, v: u32) -> Obj {
        Obj { ns, name, v }
    }

    fn names(store: &Store<Obj>) -> Vec<String> {
        let mut out: Vec<String> = store
            .state()
            .iter()
            .map(|o| format!("{}/{}@{}", o.ns, o.name, o.v))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn events_apply_as_a_reflector_applies_them() {
        let (store, mut writer) = store::<Obj>();
        writer.apply(Event::Init);
        writer.apply(Event::InitApply(obj("a", "x", 1)));
        writer.apply(Event::InitApply(obj("b", "x", 1)));
        // Not ready, and nothing visible, until the list is complete.
        assert!(store.wait_until_ready().now_or_never().is_none());
        assert!(store.is_empty());
        writer.apply(Event::InitDone);
        assert_eq!(store.wait_until_ready().now_or_never(), Some(Ok(())));
        assert_eq!(names(&store), ["a/x@1", "b/x@1"]);

        // Changes apply at once; an object is found by any form of its key.
        writer.apply(Event::Apply(obj("a", "x", 2)));
        writer.apply(Event::Apply(obj("a", "y", 1)));
        writer.apply(Event::Delete(obj("b", "x", 1)));
        assert_eq!(names(&store), ["a/x@2", "a/y@1"]);
        assert_eq!(store.get(&("a", "x")).unwrap().v, 2);
        let target = SecretTarget {
            namespace: "a".into(),
            name: "y".into(),
        };
        assert_eq!(store.get(&target).unwrap().v, 1);
        assert!(store.get(&("b", "x")).is_none());

        // A relist replaces everything: what it no longer has is gone, and the old state
        // is served until it is complete.
        writer.apply(Event::Init);
        writer.apply(Event::InitApply(obj("c", "z", 1)));
        assert_eq!(names(&store), ["a/x@2", "a/y@1"]);
        writer.apply(Event::InitDone);
        assert_eq!(names(&store), ["c/z@1"]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_writer_gone_before_its_first_list_is_reported() {
        let (store, writer) = store::<Obj>();
        drop(writer);
        assert_eq!(
            store.wait_until_ready().now_or_never(),
            Some(Err(WriterDropped))
        );
    }
}
