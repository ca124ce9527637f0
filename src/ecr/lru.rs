//! A small least-recently-used map, bounding the SDK clients a token source keeps.

use std::collections::HashMap;
use std::hash::Hash;

/// A map holding at most `capacity` entries; inserting beyond that drops the least
/// recently used one. Linear eviction, meant for a few dozen entries.
#[derive(Debug)]
pub(super) struct Lru<K, V> {
    capacity: usize,
    /// Increases on every use; an entry's stamp is the tick of its last use.
    tick: u64,
    entries: HashMap<K, (V, u64)>,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` (at least one) entries.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The value for `key`, made with `make` when absent; marks it most recently used.
    pub(super) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &V {
        self.tick += 1;
        let tick = self.tick;
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (make(), tick));
        entry.1 = tick;
        &entry.0
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        let mut made = 0;
        let mut get = |lru: &mut Lru<&str, u32>, k: &'static str| {
            *lru.get_or_insert_with(&k, || {
                made += 1;
                made
            })
        };
        assert_eq!(get(&mut lru, "a"), 1);
        assert_eq!(get(&mut lru, "b"), 2);
        assert_eq!(get(&mut lru, "a"), 1, "a is kept, not made again");
        assert_eq!(get(&mut lru, "c"), 3, "c evicts b, the least recently used");
        let mut keys: Vec<_> = lru.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(get(&mut lru, "b"), 4, "b was evicted and is made again");
        let mut keys: Vec<_> = lru.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
    }
}
