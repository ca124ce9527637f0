//! Resource limits: per plugin ([`Limits`]), host-wide ([`HostConfig`]), and
//! the per-instance limiter that enforces the memory and table limits over all
//! of an instance's memories and tables together.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Per-plugin resource limits. Every call gets the full budget again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) per call, instantiation
    /// included. Default 10,000,000 (a JavaScript naming call uses about
    /// 150,000, a Rust one about 7,000).
    pub fuel: u64,
    /// Extra fuel per candidate namespace for a fan-out call, so that the
    /// budget grows with the input. Default 100,000: a Rust plugin spends
    /// about 2,000 units per candidate, a JavaScript one (componentize-qjs,
    /// QuickJS) about 45,000, two thirds of it turning the candidate into JS
    /// objects (measured with `plugins/fanout-label` and
    /// `plugins/js/src/fanout-label.js`, one label and one annotation each).
    pub fuel_per_candidate: u64,
    /// Wall-clock deadline per call (epoch-based, resolution = the host's
    /// epoch tick). Default 100 ms.
    pub timeout: Duration,
    /// Memory of one plugin instance, in bytes: all of its linear memories
    /// together (a component may hold several core modules, each with its
    /// own memories). Default 16 MiB.
    pub memory_bytes: usize,
    /// Table elements of one plugin instance: all of its tables together.
    /// Default 20,000.
    pub table_elements: usize,
    /// Most core instances / tables / memories per plugin instance. Default 32.
    pub instances: usize,
    /// Captured stdout+stderr per session, in bytes; writing more traps.
    /// Default 64 KiB.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            fuel_per_candidate: 100_000,
            timeout: Duration::from_millis(100),
            memory_bytes: 16 << 20,
            table_elements: 20_000,
            instances: 32,
            output_bytes: 64 << 10,
        }
    }
}

/// Host-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Use wasmtime's pooling instance allocator (fresh instances are much
    /// cheaper). Falls back to on-demand allocation if the pool cannot be
    /// reserved. Default `true`.
    pub pooling: bool,
    /// Most plugin instances alive at once (pool size). Calls beyond this
    /// wait in the [`Policies`](super::Policies) façade. Default 64.
    pub max_instances: u32,
    /// Most instances of one plugin alive at once: its share of the pool
    /// (at most `max_instances`). A plugin whose calls are all slow waits for
    /// its own share and leaves the rest of the pool to the other plugins.
    /// Default 16 (a quarter of the default pool).
    pub max_instances_per_plugin: u32,
    /// Largest `memory_bytes` any plugin may be given (pool slot size).
    /// Default 256 MiB.
    pub max_memory_bytes: usize,
    /// Core instances the pool holds per plugin instance: the pool has
    /// `max_instances × core_instances_per_instance`. A plugin instance takes
    /// one per core module it instantiates: 3 for the Rust examples, 9 for a
    /// JavaScript (componentize-qjs 0.4.5) component. Default 16.
    pub core_instances_per_instance: u32,
    /// Linear memories the pool holds per plugin instance (Rust examples: 1,
    /// JavaScript: 2). Default 4.
    pub memories_per_instance: u32,
    /// Tables the pool holds per plugin instance (Rust examples: 2,
    /// JavaScript: 2). Default 8.
    pub tables_per_instance: u32,
    /// Epoch tick: resolution of the per-call deadline. Default 5 ms.
    pub epoch_tick: Duration,
    /// Largest component file accepted, in bytes; a larger one is refused
    /// before it is read or compiled. Default 32 MiB.
    pub max_component_bytes: u64,
    /// Most memory the process that compiles a component may use, in bytes
    /// (its `RLIMIT_DATA`: heap and private writable mappings, thread stacks
    /// included). A component that needs more fails its own load, naming this
    /// limit. Applies where the operator compiles in a child process of itself
    /// (`run`, `once`). Default 1 GiB; compiling the 1.6 MB JavaScript
    /// example peaks near 100 MiB.
    pub compile_memory_bytes: u64,
    /// Where compiled components are kept across restarts (e.g. an
    /// `emptyDir` volume), keyed by the component's sha256 and the engine's
    /// configuration; `None` = compile on every start. Must be writable by the
    /// operator only: entries are loaded as native code (each carries a
    /// checksum, so a torn or corrupt entry is recompiled, not run).
    pub cache_directory: Option<PathBuf>,
    /// Give plugins fixed clocks and fixed random sources (see
    /// [`sandbox`](super::sandbox)). Default `true`; `false` (the host's real
    /// clocks and random) exists only to test the façade's determinism guard.
    pub deterministic: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            pooling: true,
            max_instances: 64,
            max_instances_per_plugin: 16,
            max_memory_bytes: 256 << 20,
            core_instances_per_instance: 16,
            memories_per_instance: 4,
            tables_per_instance: 8,
            epoch_tick: Duration::from_millis(5),
            max_component_bytes: 32 << 20,
            compile_memory_bytes: 1 << 30,
            cache_directory: None,
            deterministic: true,
        }
    }
}

/// Enforces a plugin's [`Limits`] on one `Store`: memory growth is counted
/// over *all* linear memories of the instance (their creation included), and
/// table growth over all of its tables, each against one budget; also the
/// number of core instances, tables and memories.
///
/// A growth the limiter approved that then fails in wasmtime (e.g. beyond the
/// memory's declared maximum) stays counted: the budget errs on the safe side.
#[derive(Debug)]
pub(crate) struct InstanceLimiter {
    limits: Limits,
    memory_used: usize,
    table_used: usize,
    hit: bool,
}

impl InstanceLimiter {
    /// A limiter with nothing allocated yet.
    pub(crate) fn new(limits: Limits) -> Self {
        InstanceLimiter {
            limits,
            memory_used: 0,
            table_used: 0,
            hit: false,
        }
    }

    /// Whether a growth was refused because of the limits.
    pub(crate) fn hit(&self) -> bool {
        self.hit
    }

    /// Bytes of linear memory approved so far, over all memories.
    #[cfg(test)]
    pub(crate) fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Approves growing one item from `current` to `desired` if the sum over
    /// all items stays within `limit`; counts it.
    fn grow(
        used: &mut usize,
        hit: &mut bool,
        limit: usize,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> bool {
        // Beyond the item's own declared maximum: wasmtime refuses it anyway,
        // and it is not the host's limit that was reached.
        if maximum.is_some_and(|m| desired > m) {
            return false;
        }
        let total = used.saturating_add(desired.saturating_sub(current));
        if total > limit {
            *hit = true;
            return false;
        }
        *used = total;
        true
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(Self::grow(
            &mut self.memory_used,
            &mut self.hit,
            self.limits.memory_bytes,
            current,
            desired,
            maximum,
        ))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(Self::grow(
            &mut self.table_used,
            &mut self.hit,
            self.limits.table_elements,
            current,
            desired,
            maximum,
        ))
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.instances
    }

    fn memories(&self) -> usize {
        self.limits.instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn memory_is_counted_over_all_memories() {
        let mut l = InstanceLimiter::new(Limits {
            memory_bytes: 4 * MIB,
            ..Limits::default()
        });
        // Two memories created at 1 MiB each, then each grown by 1 MiB: 4 MiB in all.
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert!(l.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert!(l.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert_eq!(l.memory_used(), 4 * MIB);
        assert!(!l.hit());
        // One more page in either memory is over the instance's budget, though
        // each memory alone (2 MiB) is far below it.
        assert!(!l.memory_growing(2 * MIB, 2 * MIB + 65536, None).unwrap());
        assert!(l.hit());
        assert_eq!(l.memory_used(), 4 * MIB);
    }

    #[test]
    fn growth_beyond_a_memorys_own_maximum_is_not_the_hosts_limit() {
        let mut l = InstanceLimiter::new(Limits::default());
        assert!(!l.memory_growing(MIB, 2 * MIB, Some(MIB)).unwrap());
        assert!(!l.hit());
        assert_eq!(l.memory_used(), 0);
    }

    #[test]
    fn tables_share_one_budget() {
        let mut l = InstanceLimiter::new(Limits {
            table_elements: 100,
            ..Limits::default()
        });
        assert!(l.table_growing(0, 60, None).unwrap());
        assert!(!l.table_growing(0, 60, None).unwrap());
        assert!(l.hit());
        assert!(l.table_growing(0, 40, None).unwrap());
    }
}
