//! Resource limits: per plugin ([`Limits`]) and host-wide ([`HostConfig`]).

use std::time::Duration;

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
    /// Largest linear memory, in bytes. Default 16 MiB.
    pub memory_bytes: usize,
    /// Largest table, in elements. Default 20,000.
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
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            pooling: true,
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            core_instances_per_instance: 16,
            memories_per_instance: 4,
            tables_per_instance: 8,
            epoch_tick: Duration::from_millis(5),
        }
    }
}
