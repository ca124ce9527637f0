//! The three replaceable policies: Secret naming, namespace fan-out, retry.
//!
//! Each policy is a Rust trait ([`NamingPolicy`], [`FanoutPolicy`],
//! [`RetryPolicy`]) with a built-in implementation that reproduces the
//! original operator ([`BuiltinNaming`], [`BuiltinFanout`], [`BuiltinRetry`]),
//! and a WebAssembly implementation ([`WasmPolicy`]) that runs a plugin
//! written against the WIT contract in `wit/policy.wit` in wasmtime.
//!
//! The controller talks only to the [`Policies`] façade: it is built once from
//! the cluster owner's [`PluginRegistry`], and each custom resource picks
//! plugins by name with a [`PolicySelection`] (`None` = built-in). The façade
//! runs plugin calls on tokio's blocking pool, applies the guardrails of
//! [`guard`] to every plugin answer, and turns any misbehaviour into a
//! [`PolicyError`] that affects only the resources using that plugin.
//!
//! **Failure handling (chosen):** a failing plugin does *not* silently fall
//! back to the built-in naming or fan-out — writing a Secret under a name or
//! into namespaces the cluster owner did not intend is worse than not writing
//! it. The controller marks the resource `Ready=False` with reason
//! `PolicyFailed` (message = the error's `Display`), emits an Event and counts
//! [`PolicyError::metric_label`]. For the retry hook the controller still
//! needs *some* schedule: on error it uses [`Policies::builtin_retry`].
//!
//! **Live plugins:** [`Policies::start`] registers the plugins at once and compiles them
//! in the background ([`Reloader`]), then keeps `policy.directory` live (see
//! [`directory`]): a changed file is swapped in, a failed replacement keeps the previous
//! version serving, a removed file unregisters the plugin; [`Policies::subscribe`] says
//! what changed, so the controller reconciles the resources that select it.
//!
//! Plugins never see a token: [`CrInfo`] has no field that could carry one.

mod bindings;
mod builtin;
mod cache;
pub mod compiler;
pub mod directory;
mod epoch;
mod error;
mod facade;
pub mod guard;
mod host;
mod limits;
pub mod listcmd;
mod loader;
mod plugin;
mod registry;
pub mod sandbox;
mod session;
mod table;
pub mod testcmd;
mod types;

pub use builtin::{BuiltinFanout, BuiltinNaming, BuiltinRetry, Jitter};
pub use epoch::EpochTicker;
pub use error::{Hook, LoadError, PolicyError, Violation};
pub use facade::{AllowedNamespaces, Policies, PolicySelection};
pub use guard::RetryClamp;
pub use host::{CompileStats, LoadedPlugin, PluginHost, compile_plugin};
pub use limits::{HostConfig, Limits};
pub use loader::{PluginsError, ReloadTask, Reloader};
pub use plugin::WasmPolicy;
pub use registry::{LimitsOverride, MIN_COMPILE_MEMORY, PluginRegistration, PluginRegistry};
pub use session::{CallStats, PluginSession};
pub use table::{
    LoadState, PluginEvent, PluginEventKind, PluginSource, PluginStatus, PluginTable, Rejected,
};
pub use types::{
    CrInfo, Failure, FailureKind, FanoutPolicy, NamespaceInfo, NamingPolicy, RetryDecision,
    RetryPolicy,
};
