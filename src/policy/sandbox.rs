//! The WASI context each plugin instance gets: empty and deterministic.
//!
//! A plugin runs in a fresh instance per call and must decide the same way for
//! the same input, so nothing in its context may change between calls:
//!
//! - `wasi:clocks/wall-clock` always reads the Unix epoch (0 s, 0 ns);
//!   `wasi:clocks/monotonic-clock` always reads 0 (time never passes);
//! - `wasi:random/random` and `wasi:random/insecure` draw from the same fixed
//!   byte sequence ([`random_bytes`]), from its start, in every instance, and
//!   `wasi:random/insecure-seed` a fixed value ([`INSECURE_SEED`]);
//!   one request is capped at [`MAX_RANDOM_BYTES`] (more traps);
//! - no environment variables, no arguments, no initial working directory,
//!   no preopened directories (so no files), stdin closed;
//! - no sockets: TCP, UDP and `wasi:sockets/ip-name-lookup` are refused and
//!   every socket address is denied.
//!
//! stdout and stderr go to a bounded in-memory pipe (see
//! [`Limits::output_bytes`](super::Limits::output_bytes)). Blocking on a
//! pollable traps (see [`PluginHost`](super::PluginHost)'s linker), so a plugin
//! cannot sleep either. The WASI interfaces are those of
//! [WASI 0.2](https://github.com/WebAssembly/WASI/tree/main/wasip2).

use std::sync::LazyLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// Largest single `get-random-bytes` / `get-insecure-random-bytes` request
/// (bytes); a larger one traps instead of making the host allocate it.
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// What `wasi:random/insecure-seed.insecure-seed` returns, as one `u128`
/// (the guest sees `(low 64 bits, high 64 bits)`).
pub const INSECURE_SEED: u128 = 0x6563_722d_746f_6b65_6e2d_7265_6672_6573;

/// Length of the repeating random sequence (bytes).
const RANDOM_CYCLE: usize = 1024;

/// The byte sequence both random sources draw from, from the start, in every
/// instance: SHA-256 in counter mode over a fixed label (1 KiB, then again).
/// wasmtime-wasi turns it into values four bytes (one `u32`) at a time.
/// Not secret and not unpredictable — plugins decide policy, they do not make
/// keys.
pub fn random_bytes() -> &'static [u8] {
    static BYTES: LazyLock<Vec<u8>> = LazyLock::new(|| {
        (0u32..)
            .flat_map(|counter| {
                let mut h = Sha256::new();
                h.update(b"ecr-token-refresh:policy sandbox random");
                h.update(counter.to_be_bytes());
                h.finalize()
            })
            .take(RANDOM_CYCLE)
            .collect()
    });
    &BYTES
}

/// A wall clock stopped at the Unix epoch.
struct EpochWallClock;

impl HostWallClock for EpochWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock stopped at zero.
struct StoppedMonotonicClock;

impl HostMonotonicClock for StoppedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The WASI context of one plugin instance: output to `output`, nothing else
/// granted. With `deterministic` (always, outside tests of the host's
/// determinism guard) the clocks and random sources are fixed as described in
/// the module documentation; without it they are the host's real ones.
pub(super) fn wasi_ctx(output: &MemoryOutputPipe, deterministic: bool) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    // A new builder has no env, args, cwd, preopens or stdin (tests/policy_sandbox.rs
    // checks it with a probe plugin); the rest is denied explicitly.
    b.stdout(output.clone())
        .stderr(output.clone())
        .allow_blocking_current_thread(false)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .max_random_size(MAX_RANDOM_BYTES);
    if deterministic {
        b.wall_clock(EpochWallClock)
            .monotonic_clock(StoppedMonotonicClock)
            .secure_random(Deterministic::new(random_bytes().to_vec()))
            .insecure_random(Deterministic::new(random_bytes().to_vec()))
            .insecure_random_seed(INSECURE_SEED);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_fixed_and_not_degenerate() {
        let bytes = random_bytes();
        assert_eq!(bytes.len(), RANDOM_CYCLE);
        assert_eq!(
            &bytes[..32],
            Sha256::digest(b"ecr-token-refresh:policy sandbox random\0\0\0\0").as_slice()
        );
        let distinct: std::collections::BTreeSet<u8> = bytes.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "{} distinct byte values",
            distinct.len()
        );
    }
}
