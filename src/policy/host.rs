//! The wasmtime host: one engine, plugins compiled once (keyed by sha256) and
//! pre-instantiated, a fresh `Store` per session, limits on every call.

use std::collections::HashMap;
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreContextMut, StoreLimits, StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, fanout, naming, retry, settings};
use super::error::truncate;
use super::{CrInfo, Failure, Hook, LoadError, NamespaceInfo, PolicyError, RetryDecision};

/// Longest guest error message kept (bytes).
const MAX_GUEST_MESSAGE: usize = 1024;
/// How much captured guest output is quoted in a trap message (bytes).
const TRAP_OUTPUT_TAIL: usize = 512;

/// Per-plugin resource limits. Every call gets the full budget again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) per call, instantiation
    /// included. Default 10,000,000.
    pub fuel: u64,
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

/// Increments an engine's epoch at a fixed interval on its own thread, until
/// dropped.
pub struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine` every `tick`.
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Data of each `Store`: the (empty) WASI context, limits, captured output.
pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    output: MemoryOutputPipe,
    memory_limit_hit: bool,
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
        p.total_core_instances(h.max_instances.saturating_mul(8));
        p.total_memories(h.max_instances.saturating_mul(2));
        p.total_tables(h.max_instances.saturating_mul(4));
        p.max_memory_size(h.max_memory_bytes);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

fn wt(e: wasmtime::Error) -> String {
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
                    (Engine::new(&engine_config(None)).map_err(|e| anyhow::anyhow!(wt(e)))?, false)
                }
            }
        } else {
            (Engine::new(&engine_config(None)).map_err(|e| anyhow::anyhow!(wt(e)))?, false)
        };
        let linker = Self::linker(&engine).map_err(|e| anyhow::anyhow!("cannot build the plugin linker: {}", wt(e)))?;
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
            |_: StoreContextMut<'_, StoreData>, _: (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
                Err(wasmtime::format_err!("plugins may not block (wasi:io/poll.poll)"))
            },
        )?;
        poll.func_wrap(
            "[method]pollable.block",
            |_: StoreContextMut<'_, StoreData>, _: (Resource<DynPollable>,)| -> wasmtime::Result<()> {
                Err(wasmtime::format_err!("plugins may not block (wasi:io/poll.pollable.block)"))
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
            return Err(LoadError::InvalidLimits("fuel and timeout must be positive".into()));
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
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

struct Exports {
    settings: settings::GuestIndices,
    naming: Option<naming::GuestIndices>,
    fanout: Option<fanout::GuestIndices>,
    retry: Option<retry::GuestIndices>,
}

/// A compiled, pre-instantiated plugin with its settings and limits.
pub struct LoadedPlugin {
    name: String,
    sha256: String,
    pre: InstancePre<StoreData>,
    exports: Exports,
    settings: String,
    limits: Limits,
    epoch_tick: Duration,
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
        Hook::ALL.into_iter().filter(|h| self.has_hook(*h)).collect()
    }

    /// A fresh `Store` (empty WASI context, limits). The instance is created
    /// on the first call. Use one session per decision; a session that
    /// trapped refuses further calls.
    pub fn session(&self) -> PluginSession<'_> {
        let output = MemoryOutputPipe::new(self.limits.output_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .table_elements(self.limits.table_elements)
            .instances(self.limits.instances)
            .tables(self.limits.instances)
            .memories(self.limits.instances)
            .build();
        let data = StoreData {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            output,
            memory_limit_hit: false,
        };
        let mut store = Store::new(self.pre.engine(), data);
        store.limiter(|d| d as &mut dyn ResourceLimiter);
        PluginSession {
            plugin: self,
            store,
            instance: None,
            guests: Guests::default(),
            dead: None,
            last: CallStats::default(),
            logged: 0,
        }
    }
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Fuel consumed (instantiation included on a session's first call).
    pub fuel_consumed: u64,
    /// Wall-clock time of the call.
    pub elapsed: Duration,
}

#[derive(Default)]
struct Guests {
    settings: Option<settings::Guest>,
    naming: Option<naming::Guest>,
    fanout: Option<fanout::Guest>,
    retry: Option<retry::Guest>,
}

/// Why a call failed, before attribution to a hook.
#[derive(Clone)]
enum CallFailure {
    Trap(String),
    OutOfFuel(u64),
    Timeout(Duration),
    Memory(usize),
    MissingHook(Hook),
    Dead(String),
}

impl CallFailure {
    fn into_policy_error(self, plugin: &str, hook: Hook) -> PolicyError {
        let plugin = plugin.to_owned();
        match self {
            CallFailure::Trap(message) => PolicyError::Trap { plugin, hook, message },
            CallFailure::OutOfFuel(fuel) => PolicyError::OutOfFuel { plugin, hook, fuel },
            CallFailure::Timeout(after) => PolicyError::Timeout { plugin, hook, after },
            CallFailure::Memory(limit_bytes) => PolicyError::MemoryLimit {
                plugin,
                hook,
                limit_bytes,
            },
            CallFailure::MissingHook(h) => PolicyError::LoadFailed {
                plugin,
                hook,
                error: LoadError::MissingHook(h),
            },
            CallFailure::Dead(message) => PolicyError::Internal { plugin, hook, message },
        }
    }

    fn describe(self) -> String {
        match self {
            CallFailure::Trap(m) | CallFailure::Dead(m) => format!("trap: {m}"),
            CallFailure::OutOfFuel(f) => format!("ran out of fuel ({f} units)"),
            CallFailure::Timeout(t) => format!("timed out after {t:?}"),
            CallFailure::Memory(b) => format!("exceeded its memory limit ({b} bytes)"),
            CallFailure::MissingHook(h) => format!("missing {h} hook"),
        }
    }
}

/// One `Store` and (once called) one instance of a plugin.
///
/// Each call gets the plugin's full fuel budget and deadline again. After a
/// trap (including fuel, deadline and memory exhaustion) the session refuses
/// further calls: start a new session.
pub struct PluginSession<'p> {
    plugin: &'p LoadedPlugin,
    store: Store<StoreData>,
    instance: Option<Instance>,
    guests: Guests,
    dead: Option<String>,
    last: CallStats,
    logged: usize,
}

impl PluginSession<'_> {
    /// What the last call cost.
    pub fn last_call(&self) -> CallStats {
        self.last
    }

    /// Everything the plugin wrote to stdout/stderr in this session (bounded).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.store.data().output.contents()).into_owned()
    }

    /// Runs `f` under the limits, instantiating first if needed; classifies
    /// failures and marks the session dead after one.
    fn run<R>(
        &mut self,
        hook: Option<Hook>,
        f: impl FnOnce(&mut Store<StoreData>, &Instance, &mut Guests, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        if let Some(h) = hook
            && !self.plugin.has_hook(h)
        {
            return Err(CallFailure::MissingHook(h));
        }
        if let Some(why) = &self.dead {
            return Err(CallFailure::Dead(format!(
                "instance unusable after an earlier failure: {why}"
            )));
        }
        let fuel = self.plugin.limits.fuel;
        let started = Instant::now();
        let raw = self.run_raw(f);
        let left = self.store.get_fuel().unwrap_or(0);
        self.last = CallStats {
            fuel_consumed: fuel.saturating_sub(left),
            elapsed: started.elapsed(),
        };
        self.log_output();
        let result = raw.map_err(|e| self.classify(e));
        if let Err(e) = &result {
            self.dead = Some(e.clone().describe());
        }
        result
    }

    fn run_raw<R>(
        &mut self,
        f: impl FnOnce(&mut Store<StoreData>, &Instance, &mut Guests, &Exports) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let limits = self.plugin.limits;
        let tick = self.plugin.epoch_tick.as_nanos().max(1);
        let ticks = u64::try_from(limits.timeout.as_nanos() / tick).unwrap_or(u64::MAX);
        self.store.set_fuel(limits.fuel)?;
        self.store.set_epoch_deadline(ticks.saturating_add(1));
        let instance = match self.instance {
            Some(i) => i,
            None => {
                let i = self.plugin.pre.instantiate(&mut self.store)?;
                self.instance = Some(i);
                i
            }
        };
        f(&mut self.store, &instance, &mut self.guests, &self.plugin.exports)
    }

    /// Maps a wasmtime error from a call or instantiation to a [`CallFailure`].
    fn classify(&self, err: wasmtime::Error) -> CallFailure {
        let limits = &self.plugin.limits;
        if self.store.data().memory_limit_hit {
            return CallFailure::Memory(limits.memory_bytes);
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallFailure::OutOfFuel(limits.fuel),
            Some(Trap::Interrupt) => CallFailure::Timeout(limits.timeout),
            _ => {
                let mut msg = wt(err);
                let out = self.output();
                let out = out.trim();
                if !out.is_empty() {
                    let mut start = out.len().saturating_sub(TRAP_OUTPUT_TAIL);
                    while !out.is_char_boundary(start) {
                        start += 1;
                    }
                    msg = format!("{msg}; guest output: {}", &out[start..]);
                }
                CallFailure::Trap(msg)
            }
        }
    }

    fn log_output(&mut self) {
        let out = self.store.data().output.contents();
        if out.len() > self.logged {
            let new = String::from_utf8_lossy(&out[self.logged..]);
            tracing::debug!(plugin = %self.plugin.name, output = %new.trim_end(), "policy plugin output");
            self.logged = out.len();
        }
    }

    /// Calls `validate-settings` with the plugin's settings.
    pub fn validate_settings(&mut self) -> Result<(), LoadError> {
        let settings = self.plugin.settings.clone();
        let answer = self.run(None, |store, instance, guests, exports| {
            let g = match &guests.settings {
                Some(g) => g,
                None => guests.settings.insert(exports.settings.load(&mut *store, instance)?),
            };
            g.call_validate_settings(&mut *store, &settings)
        });
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(LoadError::SettingsRejected(truncate(&msg, MAX_GUEST_MESSAGE))),
            Err(e) => Err(LoadError::SettingsCheckFailed(e.describe())),
        }
    }

    /// Calls the naming hook. The answer is *not* checked against the
    /// guardrails (the façade does that).
    pub fn secret_name(&mut self, cr: &CrInfo, target_namespace: &str) -> Result<String, PolicyError> {
        let hook = Hook::Naming;
        let settings = self.plugin.settings.clone();
        let wit_cr = to_wit_cr(cr);
        let r = self.run(Some(hook), |store, instance, guests, exports| {
            let g = match &guests.naming {
                Some(g) => g,
                None => {
                    let idx = exports.naming.as_ref().ok_or_else(|| missing(hook))?;
                    guests.naming.insert(idx.load(&mut *store, instance)?)
                }
            };
            g.call_secret_name(&mut *store, &settings, &wit_cr, target_namespace)
        });
        self.finish(hook, r)
    }

    /// Calls the fan-out hook (one call for all candidates). Unchecked answer.
    pub fn select_namespaces(
        &mut self,
        cr: &CrInfo,
        candidates: &[NamespaceInfo],
    ) -> Result<Vec<String>, PolicyError> {
        let hook = Hook::Fanout;
        let settings = self.plugin.settings.clone();
        let wit_cr = to_wit_cr(cr);
        let wit_candidates: Vec<bindings::types::NamespaceInfo> = candidates.iter().map(to_wit_ns).collect();
        let r = self.run(Some(hook), |store, instance, guests, exports| {
            let g = match &guests.fanout {
                Some(g) => g,
                None => {
                    let idx = exports.fanout.as_ref().ok_or_else(|| missing(hook))?;
                    guests.fanout.insert(idx.load(&mut *store, instance)?)
                }
            };
            g.call_select_namespaces(&mut *store, &settings, &wit_cr, &wit_candidates)
        });
        self.finish(hook, r)
    }

    /// Calls the retry hook. Unchecked answer (delays not clamped).
    pub fn decide_retry(
        &mut self,
        cr: &CrInfo,
        failure: &Failure,
        token_expires_in: Option<Duration>,
    ) -> Result<RetryDecision, PolicyError> {
        let hook = Hook::Retry;
        let settings = self.plugin.settings.clone();
        let wit_cr = to_wit_cr(cr);
        let wit_failure = to_wit_failure(failure);
        let secs = token_expires_in.map(|d| d.as_secs());
        let r = self.run(Some(hook), |store, instance, guests, exports| {
            let g = match &guests.retry {
                Some(g) => g,
                None => {
                    let idx = exports.retry.as_ref().ok_or_else(|| missing(hook))?;
                    guests.retry.insert(idx.load(&mut *store, instance)?)
                }
            };
            g.call_decide(&mut *store, &settings, &wit_cr, &wit_failure, secs)
        });
        self.finish(hook, r).map(|d| match d {
            bindings::types::RetryDecision::RetryAfterMs(ms) => RetryDecision::RetryAfter(Duration::from_millis(ms)),
            bindings::types::RetryDecision::GiveUp(reason) => RetryDecision::GiveUp { reason },
        })
    }

    /// Attributes a call's outcome to `hook`: traps classified, guest `err`s
    /// turned into [`PolicyError::Guest`].
    fn finish<T>(&mut self, hook: Hook, r: Result<Result<T, String>, CallFailure>) -> Result<T, PolicyError> {
        let name = self.plugin.name.as_str();
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(message)) => Err(PolicyError::Guest {
                plugin: name.to_owned(),
                hook,
                message: truncate(&message, MAX_GUEST_MESSAGE),
            }),
            Err(failure) => Err(failure.into_policy_error(name, hook)),
        }
    }
}

fn missing(hook: Hook) -> wasmtime::Error {
    wasmtime::format_err!("component does not export the {hook} hook")
}

fn pairs(m: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_wit_cr(cr: &CrInfo) -> bindings::types::CrInfo {
    bindings::types::CrInfo {
        name: cr.name.clone(),
        namespace: cr.namespace.clone(),
        labels: pairs(&cr.labels),
        annotations: pairs(&cr.annotations),
        registry: cr.registry.clone(),
        account_id: cr.account_id.clone(),
        region: cr.region.clone(),
        parameters: pairs(&cr.parameters),
    }
}

fn to_wit_ns(ns: &NamespaceInfo) -> bindings::types::NamespaceInfo {
    bindings::types::NamespaceInfo {
        name: ns.name.clone(),
        labels: pairs(&ns.labels),
        annotations: pairs(&ns.annotations),
    }
}

fn to_wit_failure(f: &Failure) -> bindings::types::Failure {
    use super::FailureKind as K;
    use bindings::types::FailureKind as W;
    bindings::types::Failure {
        kind: match f.kind {
            K::Throttled => W::Throttled,
            K::AccessDenied => W::AccessDenied,
            K::Network => W::Network,
            K::ServerError => W::ServerError,
            K::InvalidResponse => W::InvalidResponse,
            K::Other => W::Other,
        },
        message: f.message.clone(),
        attempt: f.attempt,
    }
}
