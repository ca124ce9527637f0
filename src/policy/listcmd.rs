//! `ecr-token-refresh plugin list`: every registered plugin (config file and plugins
//! directory), offline: each is loaded (compiled, settings validated) here, as the
//! operator would.

use std::fmt::Write as _;

use super::{HostConfig, LoadState, PluginRegistry, PluginTable, Policies, PluginsError};

/// Loads every plugin of `registry` (blocking: compiles them) and describes each.
///
/// # Errors
/// [`PluginsError`] when the plugins cannot be registered at all (a name both in the
/// config file and the directory, an unreadable directory).
pub fn list(registry: &PluginRegistry) -> Result<PluginTable, PluginsError> {
    Ok(Policies::try_load(registry, HostConfig::default())?.statuses())
}

/// The listing, one block per plugin:
///
/// ```text
/// prefixed
///   source: config file key policy.plugins.prefixed (/etc/ecr-token-refresh/naming_prefix.wasm)
///   sha256: 3f1c…
///   hooks:  naming
///   state:  loaded
/// ```
pub fn render(table: &PluginTable) -> String {
    let mut out = String::new();
    if table.is_empty() {
        out.push_str("no policy plugins registered (policy.plugins and policy.directory are empty)\n");
    }
    for (name, status) in table {
        let sha = match (&status.state, status.sha256()) {
            (_, Some(sha)) => sha.to_owned(),
            _ => "-".to_owned(),
        };
        let hooks: Vec<&str> = status.hooks().iter().map(|h| h.as_str()).collect();
        let _ = writeln!(out, "{name}");
        let _ = writeln!(out, "  source: {}", status.source.describe(name));
        let _ = writeln!(out, "  sha256: {sha}");
        let _ = writeln!(
            out,
            "  hooks:  {}",
            if hooks.is_empty() {
                "-".to_owned()
            } else {
                hooks.join(", ")
            }
        );
        let _ = writeln!(out, "  state:  {}", status.state.describe());
        if let Some(r) = &status.rejected {
            let _ = writeln!(out, "  refused: {} ({})", r.error, r.sha256);
        }
    }
    out
}

/// Whether every plugin of `table` loaded.
pub fn all_loaded(table: &PluginTable) -> bool {
    table
        .values()
        .all(|s| matches!(s.state, LoadState::Loaded(_)) && s.rejected.is_none())
}
