//! Resource limits: per plugin ([`Limits`]) and host-wide ([`HostConfig`]).

use std::time::Duration;

/// Per-plugin resource limits. Every call gets the full budget again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) per call, instantiation
    /// included. Default 10,000,000.
    pub fuel: u64,
    /// Extra fuel per candidate namespace for a fan-out call, so that the
    /// budget grows with the input (lowering each candidate costs a few
    /// thousand units). Default 10,000.
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
            fuel_per_candidate: 10_000,
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
    /// Epoch tick: resolution of the per-call deadline. Default 5 ms.
    pub epoch_tick: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            pooling: true,
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(5),
        }
    }
}
