//! One plugin instance in a fresh `Store`: calls under limits, failures
//! classified (trap, fuel, deadline, memory), guest errors kept apart.

use std::time::{Duration, Instant};

use wasmtime::component::{Instance, ResourceTable};
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::bindings::{self, fanout, naming, retry, settings};
use super::error::truncate;
use super::host::{Exports, LoadedPlugin, StoreData, wt};
use super::limits::InstanceLimiter;
use super::sandbox;
use super::{CrInfo, Failure, Hook, LoadError, NamespaceInfo, PolicyError, RetryDecision};

/// Longest guest error message kept (bytes).
const MAX_GUEST_MESSAGE: usize = 1024;
/// How much captured guest output is quoted in a trap message (bytes).
const TRAP_OUTPUT_TAIL: usize = 512;

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
            CallFailure::Trap(message) => PolicyError::Trap {
                plugin,
                hook,
                message,
            },
            CallFailure::OutOfFuel(fuel) => PolicyError::OutOfFuel { plugin, hook, fuel },
            CallFailure::Timeout(after) => PolicyError::Timeout {
                plugin,
                hook,
                after,
            },
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
            CallFailure::Dead(message) => PolicyError::Internal {
                plugin,
                hook,
                message,
            },
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
    budget: u64,
}

impl<'p> PluginSession<'p> {
    /// A fresh `Store` for `plugin` (see [`LoadedPlugin::session`]).
    pub(super) fn new(plugin: &'p LoadedPlugin) -> Self {
        let output = MemoryOutputPipe::new(plugin.limits.output_bytes);
        let data = StoreData {
            wasi: sandbox::wasi_ctx(&output, plugin.deterministic),
            table: ResourceTable::new(),
            limits: InstanceLimiter::new(plugin.limits),
            output,
        };
        let mut store = Store::new(plugin.pre.engine(), data);
        store.limiter(|d| &mut d.limits);
        PluginSession {
            plugin,
            store,
            instance: None,
            guests: Guests::default(),
            dead: None,
            last: CallStats::default(),
            logged: 0,
            budget: plugin.limits.fuel,
        }
    }

    /// The plugin this session runs.
    pub fn plugin(&self) -> &'p LoadedPlugin {
        self.plugin
    }

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
        fuel: u64,
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
        self.budget = fuel;
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
        self.store.set_fuel(self.budget)?;
        self.store.set_epoch_deadline(ticks.saturating_add(1));
        let instance = match self.instance {
            Some(i) => i,
            None => {
                let i = self.plugin.pre.instantiate(&mut self.store)?;
                self.instance = Some(i);
                i
            }
        };
        f(
            &mut self.store,
            &instance,
            &mut self.guests,
            &self.plugin.exports,
        )
    }

    /// Maps a wasmtime error from a call or instantiation to a [`CallFailure`].
    fn classify(&self, err: wasmtime::Error) -> CallFailure {
        let limits = &self.plugin.limits;
        if self.store.data().limits.hit() {
            return CallFailure::Memory(limits.memory_bytes);
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallFailure::OutOfFuel(self.budget),
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
        let answer = self.run(
            None,
            self.plugin.limits.fuel,
            |store, instance, guests, exports| {
                let g = match &guests.settings {
                    Some(g) => g,
                    None => guests
                        .settings
                        .insert(exports.settings.load(&mut *store, instance)?),
                };
                g.call_validate_settings(&mut *store, &settings)
            },
        );
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(LoadError::SettingsRejected(truncate(
                &msg,
                MAX_GUEST_MESSAGE,
            ))),
            Err(e) => Err(LoadError::SettingsCheckFailed(e.describe())),
        }
    }

    /// Calls the naming hook. The answer is *not* checked against the
    /// guardrails (the façade does that).
    pub fn secret_name(
        &mut self,
        cr: &CrInfo,
        target_namespace: &str,
    ) -> Result<String, PolicyError> {
        let hook = Hook::Naming;
        let settings = self.plugin.settings.clone();
        let wit_cr = bindings::to_wit_cr(cr);
        let r = self.run(
            Some(hook),
            self.plugin.limits.fuel,
            |store, instance, guests, exports| {
                let g = match &guests.naming {
                    Some(g) => g,
                    None => {
                        let idx = exports.naming.as_ref().ok_or_else(|| missing(hook))?;
                        guests.naming.insert(idx.load(&mut *store, instance)?)
                    }
                };
                g.call_secret_name(&mut *store, &settings, &wit_cr, target_namespace)
            },
        );
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
        let wit_cr = bindings::to_wit_cr(cr);
        let limits = self.plugin.limits;
        let per = u64::try_from(candidates.len()).unwrap_or(u64::MAX);
        let fuel = limits
            .fuel
            .saturating_add(limits.fuel_per_candidate.saturating_mul(per));
        let wit_candidates: Vec<bindings::types::NamespaceInfo> =
            candidates.iter().map(bindings::to_wit_ns).collect();
        let r = self.run(Some(hook), fuel, |store, instance, guests, exports| {
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
        let wit_cr = bindings::to_wit_cr(cr);
        let wit_failure = bindings::to_wit_failure(failure);
        let secs = token_expires_in.map(|d| d.as_secs());
        let r = self.run(
            Some(hook),
            self.plugin.limits.fuel,
            |store, instance, guests, exports| {
                let g = match &guests.retry {
                    Some(g) => g,
                    None => {
                        let idx = exports.retry.as_ref().ok_or_else(|| missing(hook))?;
                        guests.retry.insert(idx.load(&mut *store, instance)?)
                    }
                };
                g.call_decide(&mut *store, &settings, &wit_cr, &wit_failure, secs)
            },
        );
        self.finish(hook, r).map(bindings::from_wit_decision)
    }

    /// Attributes a call's outcome to `hook`: traps classified, guest `err`s
    /// turned into [`PolicyError::Guest`].
    fn finish<T>(
        &mut self,
        hook: Hook,
        r: Result<Result<T, String>, CallFailure>,
    ) -> Result<T, PolicyError> {
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
