//! Loading the registered plugins off the reconcile path, and keeping the plugins
//! directory live.
//!
//! At start-up [`startup`] lists what is registered (the config file's plugins, then
//! the directory's) and refuses a name registered in both. The [`Reloader`] compiles
//! them on tokio's blocking pool, one after the other, swapping each into the
//! [`Policies`] table as it is ready; then it watches the directory with `notify`
//! (inotify on Linux) plus a full rescan every `policy.rescan_interval_ms` as a safety
//! net. What decides is the content ([`directory::diff`]): a plugin whose `.wasm` or
//! sidecar digest changed is loaded again (the host compiles each distinct component
//! once, keyed by sha256); a failed replacement leaves the previous version serving;
//! a removed file unregisters the plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;

use super::directory::{self, Change, Fingerprint, Found, Scan, ScanError};
use super::table::PluginSource;
use super::{
    Limits, LoadError, LoadedPlugin, PluginHost, PluginRegistration, PluginRegistry, Policies,
};

/// Why the registered plugins cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginsError {
    /// A name is registered in the config file and in the plugins directory.
    #[error(
        "policy plugin {name:?} is registered twice: as policy.plugins.{name} in the config file ({config_path}) and as {directory_path} in policy.directory; remove one"
    )]
    Conflict {
        /// The plugin name.
        name: String,
        /// The config file entry's component.
        config_path: String,
        /// The file in the directory.
        directory_path: String,
    },
    /// The plugins directory cannot be listed.
    #[error(transparent)]
    Directory(#[from] ScanError),
}

/// One plugin to load.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) name: String,
    pub(super) source: PluginSource,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    Config(PluginRegistration),
    Directory(Box<Found>),
}

impl Job {
    fn sha256(&self) -> &str {
        match &self.what {
            What::Config(r) => r.sha256.trim(),
            What::Directory(f) => &f.fingerprint.wasm,
        }
    }
}

/// What is registered at start-up.
#[derive(Debug, Default)]
pub(super) struct Startup {
    pub(super) jobs: Vec<Job>,
    /// Fingerprints of the directory's plugins (conflicting ones included).
    fingerprints: BTreeMap<String, Fingerprint>,
}

/// The plugins of the config file, then those of the directory. With `strict`, a name
/// in both or an unreadable directory is an error; without, the directory's plugin (or
/// the whole directory) is left out and logged.
pub(super) fn startup(registry: &PluginRegistry, strict: bool) -> Result<Startup, PluginsError> {
    let mut out = Startup::default();
    for (name, reg) in &registry.plugins {
        out.jobs.push(Job {
            name: name.clone(),
            source: PluginSource::Config {
                path: reg.path.clone(),
            },
            what: What::Config(reg.clone()),
        });
    }
    let Some(dir) = &registry.directory else {
        return Ok(out);
    };
    let scan = match directory::scan_limited(dir, registry.host_config().max_component_bytes) {
        Ok(scan) => scan,
        Err(e) if strict => return Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "plugins directory left out");
            return Ok(out);
        }
    };
    log_skipped(&scan);
    out.fingerprints = scan.fingerprints();
    for (name, found) in scan.plugins {
        if let Some(reg) = registry.plugins.get(&name) {
            let conflict = PluginsError::Conflict {
                name: name.clone(),
                config_path: reg.path.display().to_string(),
                directory_path: found.path.display().to_string(),
            };
            if strict {
                return Err(conflict);
            }
            tracing::error!(error = %conflict, "the plugins directory's file is left out");
            continue;
        }
        out.jobs.push(Job {
            name,
            source: PluginSource::Directory {
                path: found.path.clone(),
            },
            what: What::Directory(Box::new(found)),
        });
    }
    Ok(out)
}

fn log_skipped(scan: &Scan) {
    for (path, problem) in &scan.skipped {
        tracing::warn!(path = %path.display(), %problem, "plugins directory: entry skipped");
    }
}

/// Loads one plugin (blocking: reads, verifies, compiles, validates its settings).
pub(super) fn run(
    host: &PluginHost,
    registry: &PluginRegistry,
    job: &Job,
) -> Result<LoadedPlugin, LoadError> {
    match &job.what {
        What::Config(reg) => host.load_file(
            &job.name,
            &reg.path,
            &reg.sha256,
            reg.settings_json(),
            registry.limits_for(&job.name),
        ),
        What::Directory(found) => load_found(host, registry, &job.name, found),
    }
}

/// Loads a plugin of the directory from the bytes that were hashed, with its sidecar.
fn load_found(
    host: &PluginHost,
    registry: &PluginRegistry,
    name: &str,
    found: &Found,
) -> Result<LoadedPlugin, LoadError> {
    let sidecar = found
        .sidecar
        .clone()
        .map_err(|reason| LoadError::Sidecar {
            path: found.sidecar_path.display().to_string(),
            reason,
        })?
        .unwrap_or_default();
    let pin = match &sidecar.sha256 {
        Some(pin) => pin.clone(),
        None if registry.require_sha256 => {
            return Err(LoadError::PinRequired {
                sidecar: found.sidecar_path.display().to_string(),
            });
        }
        None => found.fingerprint.wasm.clone(),
    };
    let limits = sidecar
        .limits
        .apply(registry.defaults.apply(Limits::default()));
    host.load_bytes(name, &found.bytes, &pin, sidecar.settings_json(), limits)
}

/// Logs the outcome of loading plugin `name`.
pub(super) fn log_load(
    name: &str,
    source: &PluginSource,
    loaded: &Result<LoadedPlugin, LoadError>,
) {
    let source = source.describe(name);
    match loaded {
        Ok(p) => {
            tracing::info!(plugin = %name, %source, sha256 = p.sha256(), hooks = ?p.hooks(), "loaded policy plugin")
        }
        Err(e) => {
            tracing::error!(plugin = %name, %source, error = %e, "cannot load policy plugin")
        }
    }
}

/// The background work of live policies: compiling what was registered at start-up,
/// then watching the plugins directory. Made by [`Policies::start`].
#[derive(Debug)]
pub struct Reloader {
    work: Option<Work>,
}

#[derive(Debug)]
struct Work {
    registry: PluginRegistry,
    host: Arc<PluginHost>,
    startup: Startup,
}

/// The running [`Reloader`]; stops when dropped.
#[derive(Debug)]
pub struct ReloadTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// How long to wait after a file-system notification for the burst it starts (a copy
/// writes in several steps) before scanning.
const SETTLE: Duration = Duration::from_millis(100);

impl Reloader {
    pub(super) fn idle() -> Self {
        Self { work: None }
    }

    pub(super) fn new(registry: PluginRegistry, host: Arc<PluginHost>, startup: Startup) -> Self {
        Self {
            work: Some(Work {
                registry,
                host,
                startup,
            }),
        }
    }

    /// Starts the work on the current tokio runtime, updating `policies` (the ones
    /// [`Policies::start`] returned with this reloader).
    pub fn spawn(self, policies: Arc<Policies>) -> ReloadTask {
        let Some(work) = self.work else {
            return ReloadTask(None);
        };
        let span = tracing::info_span!("policy.reloader");
        ReloadTask(Some(tokio::spawn(tracing::Instrument::instrument(
            work.run(policies),
            span,
        ))))
    }
}

impl Work {
    async fn run(self, policies: Arc<Policies>) {
        let Work {
            registry,
            host,
            startup,
        } = self;
        let registry = Arc::new(registry);
        for job in startup.jobs {
            load_and_install(&policies, &host, &registry, job).await;
        }
        let Some(dir) = registry.directory.clone() else {
            return;
        };
        watch(dir, policies, host, registry, startup.fingerprints).await;
    }
}

async fn load_and_install(
    policies: &Policies,
    host: &Arc<PluginHost>,
    registry: &Arc<PluginRegistry>,
    job: Job,
) {
    let (h, r) = (Arc::clone(host), Arc::clone(registry));
    let name = job.name.clone();
    let source = job.source.clone();
    let sha = job.sha256().to_owned();
    let loaded = tokio::task::spawn_blocking(move || run(&h, &r, &job))
        .await
        .unwrap_or_else(|e| Err(LoadError::Instantiate(format!("the load task failed: {e}"))));
    // Compiling (Cranelift) freed several MiB on the blocking thread's arena: give it back.
    crate::heap::release_free_memory();
    policies.install(&name, &source, &sha, loaded);
}

/// Watches `dir` until dropped: a notification (after [`SETTLE`]) or the rescan interval
/// scans it; every plugin whose content differs from `known` is loaded, installed or
/// refused; removed ones are unregistered.
async fn watch(
    dir: PathBuf,
    policies: Arc<Policies>,
    host: Arc<PluginHost>,
    registry: Arc<PluginRegistry>,
    mut known: BTreeMap<String, Fingerprint>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = None;
    let mut interval = tokio::time::interval(registry.rescan_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            Some(()) = rx.recv() => {
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
            }
        }
        if watcher.is_none() {
            watcher = start_watcher(&dir, tx.clone(), &mut last_error);
        }
        let d = dir.clone();
        let max_bytes = registry.host_config().max_component_bytes;
        let scan = match tokio::task::spawn_blocking(move || directory::scan_limited(&d, max_bytes))
            .await
        {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                // Keep what serves: a directory that vanished is more likely a hiccup of
                // the volume than a wish to unregister every plugin.
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, "cannot scan the plugins directory; plugins keep serving");
                    last_error = Some(msg);
                }
                watcher = None;
                continue;
            }
            Err(_) => continue,
        };
        last_error = None;
        let now = scan.fingerprints();
        let changes = directory::diff(&known, &now);
        if changes.is_empty() {
            continue;
        }
        log_skipped(&scan);
        let mut found = scan.plugins;
        for change in changes {
            let name = change.name().to_owned();
            match change {
                Change::Removed(_) => {
                    let path = dir.join(format!("{name}.wasm"));
                    policies.remove(&name, &PluginSource::Directory { path });
                }
                Change::Added(_) | Change::Changed(_) => {
                    let Some(f) = found.remove(&name) else {
                        continue;
                    };
                    if registry.plugins.contains_key(&name) {
                        let path = f.path.display().to_string();
                        policies.refuse(
                            &name,
                            &f.fingerprint.wasm,
                            LoadError::NameTaken {
                                name: name.clone(),
                                path,
                            },
                        );
                        continue;
                    }
                    tracing::info!(plugin = %name, path = %f.path.display(), sha256 = %f.fingerprint.wasm, "plugins directory: loading");
                    let source = PluginSource::Directory {
                        path: f.path.clone(),
                    };
                    policies.mark_loading(&name, &source);
                    let job = Job {
                        name,
                        source,
                        what: What::Directory(Box::new(f)),
                    };
                    load_and_install(&policies, &host, &registry, job).await;
                }
            }
        }
        known = now;
    }
}

/// A `notify` watcher of `dir` (not recursive: the ConfigMap `..data` swap is a rename
/// in `dir` itself) that wakes the loop through `tx`. `None` (logged once) when it
/// cannot be started; the rescan interval keeps working.
fn start_watcher(
    dir: &std::path::Path,
    tx: tokio::sync::mpsc::Sender<()>,
    last_error: &mut Option<String>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // Full = a wake-up is pending already.
            let _ = tx.try_send(());
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            let msg = format!("cannot watch the plugins directory {}: {e}", dir.display());
            if last_error.as_deref() != Some(msg.as_str()) {
                tracing::warn!(error = %msg, "relying on the periodic rescan");
                *last_error = Some(msg);
            }
            None
        }
    }
}
