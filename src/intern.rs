//! One shared copy of the strings the caches repeat across thousands of entries.
//!
//! A fan-out to 5,000 namespaces caches 5,000 Secrets whose owner-uid label, owner name and
//! namespace labels, Secret name and data-hash annotation are the same five strings, and
//! 5,000 Namespaces that mostly share one or two label pairs. Held as [`Arc<str>`] from
//! [`intern`], each of those strings is allocated once: an entry holds a pointer (16
//! bytes) instead of its own heap copy (a 64-character hash is an 80-byte allocation).
//!
//! The table never outgrows what the caches hold: when it has doubled since it was last
//! pruned, the strings no entry holds any more (only the table's own reference left) are
//! dropped. Its size stays within twice the distinct strings in use, plus
//! [`MIN_PRUNE_AT`], whatever tenants create and delete.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

/// Below this many strings the table is never pruned (pruning is a pass over the table).
pub const MIN_PRUNE_AT: usize = 1024;

struct Table {
    strings: HashSet<Arc<str>>,
    /// The size at which the next insertion first prunes.
    prune_at: usize,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        strings: HashSet::new(),
        prune_at: MIN_PRUNE_AT,
    })
});

/// The shared copy of `s` (made now if no cache entry holds one).
///
/// Takes a process-wide lock for a hash lookup: meant for building cache entries, not for
/// hot loops.
pub fn intern(s: &str) -> Arc<str> {
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = table.strings.get(s) {
        return Arc::clone(shared);
    }
    if table.strings.len() >= table.prune_at {
        table.strings.retain(|a| Arc::strong_count(a) > 1);
        table.strings.shrink_to_fit();
        table.prune_at = (table.strings.len() * 2).max(MIN_PRUNE_AT);
    }
    let shared: Arc<str> = Arc::from(s);
    table.strings.insert(Arc::clone(&shared));
    shared
}

/// [`intern`] of an optional string.
pub fn intern_opt(s: Option<&str>) -> Option<Arc<str>> {
    s.map(intern)
}

/// How many strings the table holds.
#[cfg(test)]
fn table_len() -> usize {
    TABLE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .strings
        .len()
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
