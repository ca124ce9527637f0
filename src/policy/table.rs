//! The registered plugins as the façade sees them at one moment: where each comes from,
//! which version serves, and what happened to the last replacement.
//!
//! The table is swapped whole ([`arc_swap`]): a call in flight keeps the `Arc` of the
//! version it started with while a replacement is swapped in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Hook, LoadError, LoadedPlugin};

/// Where a plugin is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// `policy.plugins.NAME` of the operator config file.
    Config {
        /// The component file the entry names.
        path: PathBuf,
    },
    /// `NAME.wasm` in `policy.directory`.
    Directory {
        /// The file, as listed in the directory (before following symlinks).
        path: PathBuf,
    },
}

impl PluginSource {
    /// Describes the source for plugin `name`: `policy.plugins.NAME (PATH)` or
    /// `PATH (policy.directory)`.
    pub fn describe(&self, name: &str) -> String {
        match self {
            PluginSource::Config { path } => {
                format!("config file key policy.plugins.{name} ({})", path.display())
            }
            PluginSource::Directory { path } => format!("{} (policy.directory)", path.display()),
        }
    }
}

/// The version of a plugin that serves calls.
#[derive(Debug, Clone)]
pub enum LoadState {
    /// Being compiled; nothing serves yet.
    Loading,
    /// Compiled, pre-instantiated, settings accepted.
    Loaded(Arc<LoadedPlugin>),
    /// Could not be loaded and no earlier version exists.
    Failed(LoadError),
}

impl LoadState {
    /// `loading`, `loaded` or `failed: WHY`.
    pub fn describe(&self) -> String {
        match self {
            LoadState::Loading => "loading".into(),
            LoadState::Loaded(_) => "loaded".into(),
            LoadState::Failed(e) => format!("failed: {e}"),
        }
    }
}

/// A replacement that failed to load while an earlier version keeps serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// sha256 of the refused `.wasm`.
    pub sha256: String,
    /// Why it was refused.
    pub error: LoadError,
}

/// One registered plugin.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// Where it is registered.
    pub source: PluginSource,
    /// What serves calls.
    pub state: LoadState,
    /// The last replacement that failed, if it came after the version serving.
    pub rejected: Option<Rejected>,
}

impl PluginStatus {
    /// A plugin being compiled for the first time.
    pub fn loading(source: PluginSource) -> Self {
        Self {
            source,
            state: LoadState::Loading,
            rejected: None,
        }
    }

    /// The serving version, if loaded.
    pub fn loaded(&self) -> Option<&Arc<LoadedPlugin>> {
        match &self.state {
            LoadState::Loaded(p) => Some(p),
            _ => None,
        }
    }

    /// sha256 of the serving version, if loaded.
    pub fn sha256(&self) -> Option<&str> {
        self.loaded().map(|p| p.sha256())
    }

    /// Hooks the serving version exports (none unless loaded).
    pub fn hooks(&self) -> Vec<Hook> {
        self.loaded().map(|p| p.hooks()).unwrap_or_default()
    }
}

/// The table: name → status.
pub type PluginTable = BTreeMap<String, PluginStatus>;

/// What changed for one plugin (sent to subscribers of
/// [`Policies::subscribe`](super::Policies::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    /// The plugin name.
    pub plugin: String,
    /// What happened.
    pub kind: PluginEventKind,
}

/// What happened to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginEventKind {
    /// A version (first or replacement) now serves: resources selecting it decide again.
    Loaded {
        /// sha256 of the serving component.
        sha256: String,
    },
    /// It could not be loaded and nothing serves: resources selecting it fail.
    Failed(LoadError),
    /// A replacement was refused; the earlier version keeps serving.
    Rejected(LoadError),
    /// Its file left the directory: it is no longer registered.
    Removed,
}

impl PluginEventKind {
    /// Whether resources that select the plugin now decide differently (and must be
    /// reconciled again).
    pub fn changes_decisions(&self) -> bool {
        !matches!(self, PluginEventKind::Rejected(_))
    }

    /// A short label for metrics and logs: `loaded`, `failed`, `rejected`, `removed`.
    pub fn label(&self) -> &'static str {
        match self {
            PluginEventKind::Loaded { .. } => "loaded",
            PluginEventKind::Failed(_) => "failed",
            PluginEventKind::Rejected(_) => "rejected",
            PluginEventKind::Removed => "removed",
        }
    }
}

impl fmt::Display for PluginEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PluginEventKind::Loaded { sha256 } => {
                write!(
                    f,
                    "policy plugin {:?} loaded (sha256 {sha256})",
                    self.plugin
                )
            }
            PluginEventKind::Failed(e) => {
                write!(f, "policy plugin {:?} failed to load: {e}", self.plugin)
            }
            PluginEventKind::Rejected(e) => write!(
                f,
                "a replacement of policy plugin {:?} was refused, the previous version keeps serving: {e}",
                self.plugin
            ),
            PluginEventKind::Removed => write!(
                f,
                "policy plugin {:?} was removed from the plugins directory",
                self.plugin
            ),
        }
    }
}
