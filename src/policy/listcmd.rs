//! `ecr-token-refresh plugin list`: every registered plugin (config file and plugins
//! directory), offline: each is loaded (compiled, settings validated) here, as the
//! operator would.

use std::fmt::Write as _;

use super::host::sha256_hex;
use super::{
    HostConfig, LoadState, PluginRegistry, PluginSource, PluginTable, PluginsError, Policies,
};

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
        out.push_str(
            "no policy plugins registered (policy.plugins and policy.directory are empty)\n",
        );
    }
    for (name, status) in table {
        // The serving version's digest, else the file's (what a pin would need).
        let sha = status
            .sha256()
            .map(str::to_owned)
            .or_else(|| file_sha256(&status.source))
            .unwrap_or_else(|| "-".to_owned());
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
        let _ = writeln!(out, "  state:  {}", one_line(&status.state.describe()));
        if let Some(r) = &status.rejected {
            let _ = writeln!(
                out,
                "  refused: {} ({})",
                one_line(&r.error.to_string()),
                r.sha256
            );
        }
    }
    out
}

fn file_sha256(source: &PluginSource) -> Option<String> {
    let path = match source {
        PluginSource::Config { path } | PluginSource::Directory { path } => path,
    };
    std::fs::read(path).ok().map(|b| sha256_hex(&b))
}

/// `s` with runs of whitespace (wasmparser's multi-line messages) made one space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether every plugin of `table` loaded.
pub fn all_loaded(table: &PluginTable) -> bool {
    table
        .values()
        .all(|s| matches!(s.state, LoadState::Loaded(_)) && s.rejected.is_none())
}
