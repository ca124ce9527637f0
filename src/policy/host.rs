//! The wasmtime host: one engine, plugins compiled once (keyed by sha256,
//! optionally cached on disk) and pre-instantiated, a fresh `Store` per
//! session with an empty, deterministic WASI context (see [`super::sandbox`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreContextMut,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, fanout, naming, retry, settings};
use super::cache::ArtifactCache;
use super::compiler;
use super::limits::InstanceLimiter;
use super::{EpochTicker, Hook, HostConfig, Limits, LoadError, PluginSession};

/// Most linear memories one core module of a plugin may define (pooling
/// allocator; wasmtime's default is 1, multi-memory modules need more).
const MAX_MEMORIES_PER_MODULE: u32 = 4;

/// Data of each `Store`: the (empty) WASI context, limits, captured output.
pub(crate) struct StoreData {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: InstanceLimiter,
    pub(super) output: MemoryOutputPipe,
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

/// How the components a host holds were obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Components compiled by this host.
    pub compiled: usize,
    /// Components loaded from [`HostConfig::cache_directory`] instead.
    pub loaded_from_cache: usize,
}

/// The plugin host: one engine, a linker granting nothing, a compile cache.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<StoreData>,
    compiled: Mutex<HashMap<String, Component>>,
    disk_cache: Option<ArtifactCache>,
    compiled_count: AtomicUsize,
    cache_hits: AtomicUsize,
    config: HostConfig,
    pooling: bool,
    ticker: Arc<EpochTicker>,
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
    // Same input, same answer, on any machine: NaN bit patterns and relaxed
    // SIMD results are otherwise up to the CPU.
    c.cranelift_nan_canonicalization(true);
    c.relaxed_simd_deterministic(true);
    if let Some(h) = pool {
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(h.max_instances);
        p.total_core_instances(
            h.max_instances
                .saturating_mul(h.core_instances_per_instance),
        );
        p.total_memories(
            h.max_instances
                .saturating_mul(h.memories_per_instance.max(MAX_MEMORIES_PER_MODULE)),
        );
        p.max_memories_per_module(MAX_MEMORIES_PER_MODULE);
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
        let disk_cache = config.cache_directory.as_deref().and_then(|dir| {
            ArtifactCache::open(dir, &engine)
                .inspect_err(|e| tracing::warn!(path = %dir.display(), error = %e, "cannot use the compiled plugin cache directory; compiling on every start"))
                .ok()
        });
        Ok(PluginHost {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            disk_cache,
            compiled_count: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
            config,
            pooling,
            ticker: Arc::new(ticker),
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

    /// Number of distinct components held (compiled or loaded from the cache).
    pub fn compiled_count(&self) -> usize {
        self.compiled.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// How many components were compiled, and how many loaded from the cache directory.
    pub fn compile_stats(&self) -> CompileStats {
        CompileStats {
            compiled: self.compiled_count.load(Ordering::Relaxed),
            loaded_from_cache: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Where the compiled form of the component with digest `sha256` is
    /// cached, if a cache directory is in use.
    pub fn cache_entry(&self, sha256: &str) -> Option<std::path::PathBuf> {
        self.disk_cache.as_ref().map(|c| c.path(sha256))
    }

    fn check_size(&self, bytes: u64) -> Result<(), LoadError> {
        let limit = self.config.max_component_bytes;
        if bytes > limit {
            return Err(LoadError::TooLarge { bytes, limit });
        }
        Ok(())
    }

    /// Reads, verifies, compiles (once per sha256), pre-instantiates a plugin
    /// and lets it validate its settings.
    ///
    /// `sha256` is the registered pin (64 hex digits); `settings_json` is the
    /// settings document as JSON. A file over
    /// [`HostConfig::max_component_bytes`] is refused before it is read
    /// ([`LoadError::TooLarge`]).
    pub fn load_file(
        &self,
        name: &str,
        path: &std::path::Path,
        sha256: &str,
        settings_json: String,
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let io = |e: std::io::Error| LoadError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        self.check_size(std::fs::metadata(path).map_err(io)?.len())?;
        let bytes = std::fs::read(path).map_err(io)?;
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
        self.check_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX))?;
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
            deterministic: self.config.deterministic,
            share: self.share(),
            call_permits: Arc::new(Semaphore::new(self.share())),
            _ticker: Arc::clone(&self.ticker),
        };
        plugin.session().validate_settings()?;
        Ok(plugin)
    }

    /// Instances of one plugin allowed at once (its share of the pool).
    fn share(&self) -> usize {
        let c = &self.config;
        c.max_instances_per_plugin.clamp(1, c.max_instances.max(1)) as usize
    }

    /// The component for `bytes` (digest `sha`): held in memory, else from
    /// the cache directory, else compiled (and written to the cache directory).
    fn compile(&self, sha: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(c) = self.compiled.lock().ok().and_then(|m| m.get(sha).cloned()) {
            return Ok(c);
        }
        let started = Instant::now();
        let cached = self
            .disk_cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, sha));
        let c = match cached {
            Some(c) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sha256 = sha, elapsed = ?started.elapsed(), "loaded compiled policy plugin from the cache");
                c
            }
            None => {
                let (c, compiled_in) = self.compile_apart(bytes)?;
                self.compiled_count.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sha256 = sha, elapsed = ?started.elapsed(), compiled_in, "compiled policy plugin");
                if let Some(cache) = &self.disk_cache
                    && let Err(error) = cache.store(sha, &c)
                {
                    tracing::warn!(sha256 = sha, %error, "cannot cache the compiled policy plugin");
                }
                c
            }
        };
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(sha.to_owned(), c.clone());
        }
        Ok(c)
    }
}

impl PluginHost {
    /// Compiles `bytes` away from the host's engine and loads the result into it: in a
    /// child process when this process is set up for it ([`super::compiler`]), else with an
    /// engine of its own, made for this compile and dropped after it (Cranelift keeps its
    /// compiler contexts, about 3 MB of register-allocator arenas after one plugin, for as
    /// long as the engine that compiled lives; the host's engine lives as long as the
    /// operator).
    ///
    /// # Errors
    /// [`LoadError::NotAComponent`] when the component does not compile or load, with the
    /// compiler's message (or how the compiler process ended).
    /// Returns the component and where it was compiled (`child process` or `in process`).
    fn compile_apart(&self, bytes: &[u8]) -> Result<(Component, &'static str), LoadError> {
        let in_process = || {
            compiler::precompile(&compile_config(), bytes)
                .map(|artifact| (artifact, "in process"))
                .map_err(LoadError::NotAComponent)
        };
        let max_bytes = self.config.max_component_bytes;
        let (artifact, compiled_in) = match compiler::child_compiler() {
            Some(program) => match compiler::precompile_in_child(
                program,
                bytes,
                max_bytes,
                self.config.compile_memory_bytes,
                compiler::COMPILE_TIMEOUT,
            ) {
                Ok(artifact) => (artifact, "child process"),
                Err(compiler::ChildError::Spawn(e)) => {
                    tracing::warn!(error = %e, "cannot start the plugin compiler process; compiling in process");
                    in_process()?
                }
                Err(compiler::ChildError::Failed(e)) => return Err(LoadError::NotAComponent(e)),
            },
            None => in_process()?,
        };
        // SAFETY: `artifact` is what `Engine::precompile_component` made, with the
        // configuration of `compile_config`, in this process or in a child running this
        // very executable; it never left the two. wasmtime still checks that it was made
        // by the same wasmtime version and settings as `self.engine`.
        unsafe { Component::deserialize(&self.engine, &artifact) }
            .map(|component| (component, compiled_in))
            .map_err(|e| LoadError::NotAComponent(wt(e)))
    }
}

/// The engine configuration components are compiled with (the host's, without the
/// pooling allocator, which only decides how instances are allocated, not the code).
pub(super) fn compile_config() -> Config {
    engine_config(None)
}

/// The `compile-plugin` subcommand: a component on `input` (at most `max_bytes`), its
/// compiled artifact to `output`. See [`super::compiler`].
///
/// # Errors
/// A message for stderr (unreadable or oversized input, or wasmtime's).
pub fn compile_plugin(
    input: impl std::io::Read,
    output: impl std::io::Write,
    max_bytes: u64,
) -> Result<(), String> {
    compiler::compile_stream(&compile_config(), input, output, max_bytes)
}

/// Lower-case hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
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
    pub(super) deterministic: bool,
    share: usize,
    call_permits: Arc<Semaphore>,
    /// Keeps the deadlines ticking while a call may still run, even if the
    /// host itself is dropped meanwhile.
    _ticker: Arc<EpochTicker>,
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

    /// Calls of this plugin running now (each holds one of its share of the
    /// instance pool, [`HostConfig::max_instances_per_plugin`]).
    pub fn calls_in_flight(&self) -> usize {
        self.share
            .saturating_sub(self.call_permits.available_permits())
    }

    /// The permits for this plugin's calls (its share of the instance pool).
    pub(super) fn call_permits(&self) -> &Arc<Semaphore> {
        &self.call_permits
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
