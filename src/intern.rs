//! One shared copy of the strings the caches repeat across thousands of entries.
//!
//! A fan-out to 5,000 namespaces caches 5,000 Secrets with the same name, and 5,000
//! Namespaces that mostly share one or two label pairs. Held as [`Arc<str>`] from
//! [`intern`], each of those strings is allocated once: an entry holds a pointer (16
//! bytes) instead of its own heap copy.
//!
//! An [`Interner`] does the same for other values many entries hold alike: the labels,
//! annotations and controller uid every copy of one resource's Secret carries
//! ([`crate::secret::SecretMarks`]) and what every record of those writes holds
//! ([`crate::controller::memory::Stamp`]).
//!
//! A table never outgrows what the caches hold: when it has doubled since it was last
//! pruned, the values no entry holds any more (only the table's own reference left) are
//! dropped. Its size stays within twice the distinct values in use at the last pruning,
//! and at least [`MIN_PRUNE_AT`], whatever tenants create and delete.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

/// Below this many values a table is never pruned (pruning is a pass over the table).
pub const MIN_PRUNE_AT: usize = 1024;

/// A table of shared values of type `T` (`str`, or a struct many cache entries hold
/// alike): [`Interner::share`] hands out the one [`Arc`] of each distinct value.
///
/// Pruned as described in the [module docs](self).
pub struct Interner<T: ?Sized> {
    table: Mutex<Table<T>>,
}

struct Table<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// The size at which the next insertion first prunes.
    prune_at: usize,
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            table: Mutex::new(Table {
                values: HashSet::new(),
                prune_at: MIN_PRUNE_AT,
            }),
        }
    }

    /// The shared copy of `value` (moved into the table if no entry holds an equal one).
    ///
    /// Takes the table's lock for a hash lookup: meant for building cache entries, not for
    /// hot loops.
    pub fn share(&self, value: T) -> Arc<T>
    where
        T: Sized,
    {
        self.share_with(value, Arc::new)
    }

    /// The shared copy of what `value` borrows as, made from `value` by `make` if no entry
    /// holds an equal one.
    fn share_with<V: Borrow<T>>(&self, value: V, make: impl FnOnce(V) -> Arc<T>) -> Arc<T> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = table.values.get(value.borrow()) {
            return Arc::clone(shared);
        }
        if table.values.len() >= table.prune_at {
            table.values.retain(|a| Arc::strong_count(a) > 1);
            table.values.shrink_to_fit();
            table.prune_at = (table.values.len() * 2).max(MIN_PRUNE_AT);
        }
        let shared = make(value);
        table.values.insert(Arc::clone(&shared));
        shared
    }

    /// How many values the table holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values
            .len()
    }
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Self::new()
    }
}

static STRINGS: LazyLock<Interner<str>> = LazyLock::new(Interner::new);

/// The shared copy of `s` (made now if no cache entry holds one).
///
/// Takes a process-wide lock for a hash lookup: meant for building cache entries, not for
/// hot loops.
pub fn intern(s: &str) -> Arc<str> {
    STRINGS.share_with(s, Arc::from)
}

/// How many strings the table holds.
#[cfg(test)]
fn table_len() -> usize {
    STRINGS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let a = intern("intern-test-owner-uid");
        let b = intern(&String::from("intern-test-owner-uid"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "intern-test-owner-uid");
        assert!(!Arc::ptr_eq(&a, &intern("intern-test-other")));
    }

    #[test]
    fn strings_no_entry_holds_are_dropped_and_the_table_stays_bounded() {
        // Many distinct strings, each dropped at once (a tenant churning names): the
        // table never holds more than twice what is in use plus the floor.
        let kept: Vec<Arc<str>> = (0..100).map(|i| intern(&format!("kept-{i}"))).collect();
        for i in 0..20 * MIN_PRUNE_AT {
            drop(intern(&format!("churn-{i}")));
            // (Slack for strings other tests of this process hold meanwhile.)
            assert!(table_len() <= 2 * (kept.len() + 1000) + MIN_PRUNE_AT + 1);
        }
        // What is still held survives pruning, and is still the shared copy.
        for (i, k) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(k, &intern(&format!("kept-{i}"))));
        }
    }
}
