//! Errors of the policy layer.

use std::fmt;
use std::time::Duration;

/// One of the three policy hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Secret naming (`naming` interface).
    Naming,
    /// Namespace fan-out (`fanout` interface).
    Fanout,
    /// Retry after failure (`retry` interface).
    Retry,
}

impl Hook {
    /// All hooks, in WIT order.
    pub const ALL: [Hook; 3] = [Hook::Naming, Hook::Fanout, Hook::Retry];

    /// The WIT interface name (`naming`, `fanout`, `retry`).
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Naming => "naming",
            Hook::Fanout => "fanout",
            Hook::Retry => "retry",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin could not be loaded (recorded at start-up, reported on each use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// Path of the plugin file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The component file is larger than [`HostConfig::max_component_bytes`](super::HostConfig::max_component_bytes)
    /// (checked before it is read or compiled).
    #[error(
        "component is {bytes} bytes, over the limit of {limit} bytes (policy.max_component_bytes)"
    )]
    TooLarge {
        /// Size of the file, in bytes.
        bytes: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The registration's `sha256` is not a 64-digit hex string.
    #[error("sha256 pin {0:?} is not 64 hexadecimal digits")]
    BadPin(String),
    /// The file's digest differs from the registered pin.
    #[error("sha256 mismatch: registered {expected}, file has {actual}")]
    Sha256Mismatch {
        /// The pin from the registration.
        expected: String,
        /// The digest of the file.
        actual: String,
    },
    /// Not a valid WebAssembly component for this host.
    #[error("not a loadable WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component imports something the host does not provide, or cannot
    /// be instantiated within its limits.
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// The component does not export the `settings` interface.
    #[error("does not export ecr-token-refresh:policy/settings@0.1.0")]
    NoSettingsExport,
    /// The component does not export the requested hook.
    #[error("does not export the {0} hook (ecr-token-refresh:policy/{0}@0.1.0)")]
    MissingHook(Hook),
    /// The settings document cannot be turned into JSON.
    #[error("settings are not representable as JSON: {0}")]
    SettingsNotJson(String),
    /// The plugin's `validate-settings` refused the settings.
    #[error("settings rejected by the plugin: {0}")]
    SettingsRejected(String),
    /// `validate-settings` itself failed (trap, fuel, timeout, memory).
    #[error("settings validation failed: {0}")]
    SettingsCheckFailed(String),
    /// The configured limits are unusable with this host.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    /// The host engine could not be created, so no plugin can run.
    #[error("plugin host unavailable: {0}")]
    HostUnavailable(String),
    /// `policy.require_sha256` is set and the plugin's `NAME.yaml` sidecar gives no
    /// `sha256` pin.
    #[error("policy.require_sha256 is set and {sidecar} gives no sha256 pin")]
    PinRequired {
        /// The sidecar file that should hold the pin (`NAME.yaml`, may not exist).
        sidecar: String,
    },
    /// The `NAME.yaml` sidecar of a plugin in `policy.directory` is not valid.
    #[error("invalid sidecar {path}: {reason}")]
    Sidecar {
        /// The sidecar file.
        path: String,
        /// What is wrong (names the key).
        reason: String,
    },
    /// A plugin file in `policy.directory` has the name of a plugin registered in the
    /// config file (`policy.plugins.NAME`); the config file's one is used.
    #[error(
        "{path} has the name of policy.plugins.{name} in the config file; the config file's plugin is used"
    )]
    NameTaken {
        /// The plugin name.
        name: String,
        /// The file in the directory.
        path: String,
    },
}

/// An answer rejected by the host's guardrails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The Secret name is not a DNS-1123 subdomain.
    #[error("secret name {name:?} is not a valid DNS-1123 subdomain: {reason}")]
    InvalidName {
        /// The offending name (truncated for display).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A chosen namespace was not among the candidates.
    #[error("namespace {0:?} was not among the candidates")]
    NotACandidate(String),
    /// A chosen namespace is not allowed for this resource.
    #[error("namespace {0:?} is not allowed for this resource")]
    NamespaceNotAllowed(String),
    /// Two identical calls gave different answers: the plugin is not
    /// deterministic (the host would create, prune and recreate Secrets in a loop).
    #[error(
        "two identical calls gave different answers ({first:?}, then {second:?}); plugins must answer the same for the same input"
    )]
    Unstable {
        /// The first answer (truncated for display).
        first: String,
        /// The second answer (truncated for display).
        second: String,
    },
    /// The answer is larger than the host accepts.
    #[error("{what} too large: {len} > {max}")]
    OutputTooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
}

/// Why a policy decision failed. Messages name the plugin and the hook.
///
/// `Clone` so that a load error recorded at start-up can be reported on
/// every use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The resource selects a plugin that the cluster owner did not register.
    #[error("policy plugin {plugin:?} ({hook} hook) is not registered")]
    NotRegistered {
        /// Plugin name from the resource.
        plugin: String,
        /// Hook it was selected for.
        hook: Hook,
    },
    /// The plugin is registered but is still being compiled (at start-up, or a file that
    /// just appeared in `policy.directory`); the resource is reconciled again once it is
    /// loaded.
    #[error(
        "policy plugin {plugin:?} ({hook} hook) is still loading (compiling); the resource is reconciled again once it is loaded"
    )]
    Loading {
        /// Plugin name.
        plugin: String,
        /// Hook it was selected for.
        hook: Hook,
    },
    /// The plugin is registered but could not be loaded, or lacks the hook.
    #[error("policy plugin {plugin:?} ({hook} hook) failed to load: {error}")]
    LoadFailed {
        /// Plugin name.
        plugin: String,
        /// Hook in use when the error was reported.
        hook: Hook,
        /// The cause.
        error: LoadError,
    },
    /// The plugin trapped (panic, `unreachable`, forbidden blocking call…).
    #[error("policy plugin {plugin:?} trapped in the {hook} hook: {message}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// Trap description (with guest output, if any, truncated).
        message: String,
    },
    /// The plugin used up its fuel (instruction budget).
    #[error("policy plugin {plugin:?} ran out of fuel ({fuel} units) in the {hook} hook")]
    OutOfFuel {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// The budget.
        fuel: u64,
    },
    /// The plugin ran past its wall-clock deadline.
    #[error("policy plugin {plugin:?} timed out after {after:?} in the {hook} hook")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// The deadline.
        after: Duration,
    },
    /// The plugin tried to grow its memory (or tables) past the limit.
    #[error(
        "policy plugin {plugin:?} exceeded its memory limit ({limit_bytes} bytes) in the {hook} hook"
    )]
    MemoryLimit {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// The limit, in bytes.
        limit_bytes: usize,
    },
    /// The plugin returned an `err` (a domain error of its own).
    #[error("policy plugin {plugin:?} returned an error from the {hook} hook: {message}")]
    Guest {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// The plugin's message (truncated).
        message: String,
    },
    /// The plugin's answer broke a guardrail.
    #[error(
        "policy plugin {plugin:?} gave an answer outside the guardrails in the {hook} hook: {violation}"
    )]
    Guardrail {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// What was wrong.
        violation: Violation,
    },
    /// Something failed in the host itself (e.g. the blocking task panicked).
    #[error("policy plugin {plugin:?} ({hook} hook): internal error: {message}")]
    Internal {
        /// Plugin name.
        plugin: String,
        /// Hook.
        hook: Hook,
        /// Description.
        message: String,
    },
}

impl PolicyError {
    /// A short CamelCase reason, for status conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::NotRegistered { .. } => "PluginNotRegistered",
            PolicyError::Loading { .. } => "PluginLoading",
            PolicyError::LoadFailed { .. } => "PluginLoadFailed",
            PolicyError::Trap { .. } => "PluginTrapped",
            PolicyError::OutOfFuel { .. } => "PluginOutOfFuel",
            PolicyError::Timeout { .. } => "PluginTimeout",
            PolicyError::MemoryLimit { .. } => "PluginMemoryLimit",
            PolicyError::Guest { .. } => "PluginError",
            PolicyError::Guardrail { .. } => "PluginAnswerRejected",
            PolicyError::Internal { .. } => "PluginInternalError",
        }
    }

    /// A short snake_case label, for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PolicyError::NotRegistered { .. } => "not_registered",
            PolicyError::Loading { .. } => "loading",
            PolicyError::LoadFailed { .. } => "load_failed",
            PolicyError::Trap { .. } => "trap",
            PolicyError::OutOfFuel { .. } => "out_of_fuel",
            PolicyError::Timeout { .. } => "timeout",
            PolicyError::MemoryLimit { .. } => "memory_limit",
            PolicyError::Guest { .. } => "guest_error",
            PolicyError::Guardrail { .. } => "guardrail",
            PolicyError::Internal { .. } => "internal",
        }
    }

    /// The plugin concerned.
    pub fn plugin(&self) -> &str {
        match self {
            PolicyError::NotRegistered { plugin, .. }
            | PolicyError::Loading { plugin, .. }
            | PolicyError::LoadFailed { plugin, .. }
            | PolicyError::Trap { plugin, .. }
            | PolicyError::OutOfFuel { plugin, .. }
            | PolicyError::Timeout { plugin, .. }
            | PolicyError::MemoryLimit { plugin, .. }
            | PolicyError::Guest { plugin, .. }
            | PolicyError::Guardrail { plugin, .. }
            | PolicyError::Internal { plugin, .. } => plugin,
        }
    }

    /// The hook concerned.
    pub fn hook(&self) -> Hook {
        match self {
            PolicyError::NotRegistered { hook, .. }
            | PolicyError::Loading { hook, .. }
            | PolicyError::LoadFailed { hook, .. }
            | PolicyError::Trap { hook, .. }
            | PolicyError::OutOfFuel { hook, .. }
            | PolicyError::Timeout { hook, .. }
            | PolicyError::MemoryLimit { hook, .. }
            | PolicyError::Guest { hook, .. }
            | PolicyError::Guardrail { hook, .. }
            | PolicyError::Internal { hook, .. } => *hook,
        }
    }
}

/// Cuts `s` to at most `max` bytes (on a char boundary), marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_plugin_and_hook() {
        let e = PolicyError::OutOfFuel {
            plugin: "p".into(),
            hook: Hook::Naming,
            fuel: 10,
        };
        assert_eq!(
            e.to_string(),
            "policy plugin \"p\" ran out of fuel (10 units) in the naming hook"
        );
        assert_eq!(e.metric_label(), "out_of_fuel");
        assert_eq!(e.reason(), "PluginOutOfFuel");
        assert_eq!(e.hook(), Hook::Naming);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        let t = truncate("ééé", 3);
        assert!(t.starts_with('é') && t.contains("6 bytes"), "{t}");
    }
}
