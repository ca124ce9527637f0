//! The wasmtime host: one engine, plugins compiled once (keyed by sha256) and
//! pre-instantiated, a fresh `Store` per session, no ambient capabilities.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    StoreContextMut, StoreLimits,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, fanout, naming, retry, settings};
use super::{EpochTicker, Hook, HostConfig, Limits, LoadError, PluginSession};

/// Data of each `Store`: the (empty) WASI context, limits, captured output.
pub(crate) struct StoreData {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) output: MemoryOutputPipe,
    pub(super) memory_limit_hit: bool,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::types::Host for StoreData {}

impl ResourceLimiter for StoreData {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        self.memory_limit_hit |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.table_growing(current, desired, maximum)?;
        self.memory_limit_hit |= !ok;
        Ok(ok)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The plugin host: one engine, a linker granting nothing, a compile cache.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<StoreData>,
    compiled: Mutex<HashMap<String, Component>>,
    config: HostConfig,
    pooling: bool,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.config)
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

fn engine_config(pool: Option<&HostConfig>) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.consume_fuel(true);
    c.epoch_interruption(true);
    if let Some(h) = pool {
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(h.max_instances);
        p.total_core_instances(
            h.max_instances
                .saturating_mul(h.core_instances_per_instance),
        );
        p.total_memories(h.max_instances.saturating_mul(h.memories_per_instance));
        p.total_tables(h.max_instances.saturating_mul(h.tables_per_instance));
        p.max_memory_size(h.max_memory_bytes);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Formats a wasmtime error with its causes.
pub(super) fn wt(e: wasmtime::Error) -> String {
    format!("{e:#}")
}

impl PluginHost {
    /// Creates the engine, the linker and the epoch ticker.
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        let (engine, pooling) = if config.pooling {
            match Engine::new(&engine_config(Some(&config))) {
                Ok(e) => (e, true),
                Err(e) => {
                    tracing::warn!(error = %wt(e), "cannot reserve the wasm instance pool; using on-demand allocation");
                    (
                        Engine::new(&engine_config(None)).map_err(|e| anyhow::anyhow!(wt(e)))?,
                        false,
                    )
                }
            }
        } else {
            (
                Engine::new(&engine_config(None)).map_err(|e| anyhow::anyhow!(wt(e)))?,
                false,
            )
        };
        let linker = Self::linker(&engine)
            .map_err(|e| anyhow::anyhow!("cannot build the plugin linker: {}", wt(e)))?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(PluginHost {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            config,
            pooling,
            _ticker: ticker,
        })
    }

    /// A linker with WASI p2 (granting nothing: see [`PluginHost::store`])
    /// where blocking on a pollable traps, so a plugin cannot sleep past its
    /// deadline in host code.
    fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Policy::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |d| d)?;
        linker.allow_shadowing(true);
        let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
        poll.func_wrap(
            "poll",
            |_: StoreContextMut<'_, StoreData>,
             _: (Vec<Resource<DynPollable>>,)|
             -> wasmtime::Result<(Vec<u32>,)> {
                Err(wasmtime::format_err!(
                    "plugins may not block (wasi:io/poll.poll)"
                ))
            },
        )?;
        poll.func_wrap(
            "[method]pollable.block",
            |_: StoreContextMut<'_, StoreData>,
             _: (Resource<DynPollable>,)|
             -> wasmtime::Result<()> {
                Err(wasmtime::format_err!(
                    "plugins may not block (wasi:io/poll.pollable.block)"
                ))
            },
        )?;
        linker.allow_shadowing(false);
        Ok(linker)
    }

    /// The host's configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// Number of distinct components compiled so far.
    pub fn compiled_count(&self) -> usize {
        self.compiled.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Reads, verifies, compiles (once per sha256), pre-instantiates a plugin
    /// and lets it validate its settings.
    ///
    /// `sha256` is the registered pin (64 hex digits); `settings_json` is the
    /// settings document as JSON.
    pub fn load_file(
        &self,
        name: &str,
        path: &std::path::Path,
        sha256: &str,
        settings_json: String,
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.load_bytes(name, &bytes, sha256, settings_json, limits)
    }

    /// Like [`load_file`](Self::load_file), from bytes.
    pub fn load_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: &str,
        settings_json: String,
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let expected = sha256.trim().to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LoadError::BadPin(sha256.to_owned()));
        }
        let actual = sha256_hex(bytes);
        if actual != expected {
            return Err(LoadError::Sha256Mismatch { expected, actual });
        }
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(LoadError::InvalidLimits(format!(
                "memory_bytes {} exceeds the host maximum {}",
                limits.memory_bytes, self.config.max_memory_bytes
            )));
        }
        if limits.fuel == 0 || limits.timeout.is_zero() {
            return Err(LoadError::InvalidLimits(
                "fuel and timeout must be positive".into(),
            ));
        }
        let component = self.compile(&actual, bytes)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate(wt(e)))?;
        let exports = Exports {
            settings: settings::GuestIndices::new(&pre).map_err(|_| LoadError::NoSettingsExport)?,
            naming: naming::GuestIndices::new(&pre).ok(),
            fanout: fanout::GuestIndices::new(&pre).ok(),
            retry: retry::GuestIndices::new(&pre).ok(),
        };
        let plugin = LoadedPlugin {
            name: name.to_owned(),
            sha256: actual,
            pre,
            exports,
            settings: settings_json,
            limits,
            epoch_tick: self.config.epoch_tick,
        };
        plugin.session().validate_settings()?;
        Ok(plugin)
    }

    fn compile(&self, sha: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(c) = self.compiled.lock().ok().and_then(|m| m.get(sha).cloned()) {
            return Ok(c);
        }
        let started = Instant::now();
        let c = Component::new(&self.engine, bytes).map_err(|e| LoadError::NotAComponent(wt(e)))?;
        tracing::debug!(sha256 = sha, elapsed = ?started.elapsed(), "compiled policy plugin");
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(sha.to_owned(), c.clone());
        }
        Ok(c)
    }
}

/// Lower-case hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Where the component's exports are (looked up once, at load).
pub(super) struct Exports {
    pub(super) settings: settings::GuestIndices,
    pub(super) naming: Option<naming::GuestIndices>,
    pub(super) fanout: Option<fanout::GuestIndices>,
    pub(super) retry: Option<retry::GuestIndices>,
}

/// A compiled, pre-instantiated plugin with its settings and limits.
pub struct LoadedPlugin {
    pub(super) name: String,
    sha256: String,
    pub(super) pre: InstancePre<StoreData>,
    pub(super) exports: Exports,
    pub(super) settings: String,
    pub(super) limits: Limits,
    pub(super) epoch_tick: Duration,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("hooks", &self.hooks())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's sha256 (lower-case hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The limits applied to each call.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The settings document (JSON) given to every call.
    pub fn settings_json(&self) -> &str {
        &self.settings
    }

    /// Whether the component exports `hook`.
    pub fn has_hook(&self, hook: Hook) -> bool {
        match hook {
            Hook::Naming => self.exports.naming.is_some(),
            Hook::Fanout => self.exports.fanout.is_some(),
            Hook::Retry => self.exports.retry.is_some(),
        }
    }

    /// The hooks the component exports.
    pub fn hooks(&self) -> Vec<Hook> {
        Hook::ALL
            .into_iter()
            .filter(|h| self.has_hook(*h))
            .collect()
    }

    /// A fresh `Store` (empty WASI context, limits). The instance is created
    /// on the first call. Use one session per decision; a session that
    /// trapped refuses further calls.
    pub fn session(&self) -> PluginSession<'_> {
        PluginSession::new(self)
    }
}
