//! Plugin registrations by the cluster owner.
//!
//! [`PluginRegistry::load_file`] reads them from a YAML (or JSON) file; it is
//! the one function the operator config (figment) will replace: the types
//! derive `Deserialize` with `deny_unknown_fields`, so they can be embedded
//! in a larger config as they are. It is the `policy` section of the operator config; see `config/operator.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{HostConfig, Limits};

/// All registered plugins, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRegistry {
    /// Limits applied to every plugin unless its registration overrides them.
    #[serde(default)]
    pub defaults: LimitsOverride,
    /// Registrations, keyed by the name custom resources use to select them.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginRegistration>,
    /// A directory of drop-in plugins, watched while the operator runs (see
    /// [`directory`](super::directory)): `NAME.wasm` is plugin `NAME`, with an optional
    /// `NAME.yaml` beside it holding `sha256`, `settings` and `limits` (the keys of a
    /// `plugins.NAME` entry without `path`). Relative to the config file. Unset (the
    /// default): no directory.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Refuse a plugin of [`directory`](Self::directory) whose sidecar gives no `sha256`
    /// pin (default `false`: the file's own digest is used). Plugins of the config file
    /// always carry a pin.
    #[serde(default)]
    pub require_sha256: bool,
    /// How often [`directory`](Self::directory) is scanned again in full, in milliseconds,
    /// besides the file-system notifications (a safety net: default 10000).
    #[serde(default)]
    pub rescan_interval_ms: Option<u64>,
    /// Where compiled plugins are kept across restarts (e.g. an `emptyDir`
    /// mount writable by the operator only); unset = compile at every start.
    /// Relative paths are resolved like plugin paths.
    #[serde(default)]
    pub cache_directory: Option<PathBuf>,
    /// Largest plugin file accepted, in bytes; larger ones are refused before
    /// compiling. Default 32 MiB (33554432).
    #[serde(default)]
    pub max_component_bytes: Option<u64>,
    /// Most memory the plugin compiler process may use, in bytes; a plugin
    /// whose compilation needs more fails to load. Default 1 GiB (1073741824).
    #[serde(default)]
    pub compile_memory_bytes: Option<u64>,
    /// Most instances of one plugin running at once: its share of the
    /// instance pool (64), so that one slow plugin cannot hold them all.
    /// Default 16.
    #[serde(default)]
    pub max_instances_per_plugin: Option<u32>,
}

/// Smallest [`PluginRegistry::compile_memory_bytes`] accepted: below it even the
/// compiler's threads may not start (64 MiB).
pub const MIN_COMPILE_MEMORY: u64 = 64 << 20;

/// Default of [`PluginRegistry::rescan_interval_ms`].
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// One plugin file the cluster owner allows custom resources to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRegistration {
    /// Path of the `.wasm` component. Relative paths are resolved against
    /// the directory of the registry file.
    pub path: PathBuf,
    /// Required sha256 of the file (64 hex digits); a mismatch refuses the plugin.
    pub sha256: String,
    /// The settings document handed to the plugin (any YAML/JSON value;
    /// passed as JSON; `{}` when absent).
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// Limits for this plugin, overriding `defaults` field by field.
    #[serde(default)]
    pub limits: LimitsOverride,
}

/// Optional limits; unset fields keep the value they override.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    /// Fuel per call (≈ WebAssembly instructions).
    pub fuel: Option<u64>,
    /// Extra fuel per candidate namespace in a fan-out call.
    pub fuel_per_candidate: Option<u64>,
    /// Wall-clock deadline per call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Largest linear memory, in bytes.
    pub memory_bytes: Option<usize>,
    /// Largest table, in elements.
    pub table_elements: Option<usize>,
    /// Most core instances / tables / memories per instance.
    pub instances: Option<usize>,
    /// Captured stdout+stderr per call, in bytes.
    pub output_bytes: Option<usize>,
}

impl LimitsOverride {
    /// `base` with the fields set here replaced.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            fuel_per_candidate: self.fuel_per_candidate.unwrap_or(base.fuel_per_candidate),
            timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(base.timeout),
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            table_elements: self.table_elements.unwrap_or(base.table_elements),
            instances: self.instances.unwrap_or(base.instances),
            output_bytes: self.output_bytes.unwrap_or(base.output_bytes),
        }
    }
}

impl PluginRegistry {
    /// Reads and validates a registry file (YAML; JSON is YAML too).
    /// Relative plugin paths are made absolute against the file's directory.
    pub fn load_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read plugin registry {}", path.display()))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base)
            .with_context(|| format!("invalid plugin registry {}", path.display()))
    }

    /// Parses and validates a registry document; relative paths are
    /// resolved against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> anyhow::Result<Self> {
        let mut reg: PluginRegistry = if text.trim().is_empty() {
            PluginRegistry::default()
        } else {
            serde_yaml::from_str(text)?
        };
        for r in reg.plugins.values_mut() {
            if r.path.is_relative() {
                r.path = base_dir.join(&r.path);
            }
        }
        for dir in [reg.directory.as_mut(), reg.cache_directory.as_mut()]
            .into_iter()
            .flatten()
        {
            if dir.is_relative() {
                *dir = base_dir.join(&*dir);
            }
        }
        reg.validate()?;
        Ok(reg)
    }

    /// Checks names, pins and limits; errors name the offending key.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_limits("defaults.limits", &self.defaults)?;
        anyhow::ensure!(
            self.rescan_interval_ms != Some(0),
            "rescan_interval_ms: must be positive"
        );
        anyhow::ensure!(
            self.directory
                .as_ref()
                .is_none_or(|d| !d.as_os_str().is_empty()),
            "directory: must not be empty (leave it unset for no directory)"
        );
        anyhow::ensure!(
            self.max_component_bytes != Some(0),
            "max_component_bytes: must be positive"
        );
        anyhow::ensure!(
            self.compile_memory_bytes
                .is_none_or(|b| b >= MIN_COMPILE_MEMORY),
            "compile_memory_bytes: must be at least {MIN_COMPILE_MEMORY} (64 MiB)"
        );
        let pool = HostConfig::default().max_instances;
        anyhow::ensure!(
            self.max_instances_per_plugin
                .is_none_or(|n| (1..=pool).contains(&n)),
            "max_instances_per_plugin: must be between 1 and the pool size ({pool})"
        );
        anyhow::ensure!(
            self.cache_directory
                .as_ref()
                .is_none_or(|d| !d.as_os_str().is_empty()),
            "cache_directory: must not be empty"
        );
        for (name, r) in &self.plugins {
            anyhow::ensure!(
                is_plugin_name(name),
                "plugins.{name}: plugin names must be 1-63 lowercase letters, digits or '-' (not at either end)"
            );
            let pin = r.sha256.trim();
            anyhow::ensure!(
                pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "plugins.{name}.sha256: {pin:?} is not 64 hexadecimal digits"
            );
            anyhow::ensure!(
                !r.path.as_os_str().is_empty(),
                "plugins.{name}.path: must not be empty"
            );
            check_limits(&format!("plugins.{name}.limits"), &r.limits)?;
        }
        Ok(())
    }

    /// How often the plugins directory is scanned again in full.
    pub fn rescan_interval(&self) -> Duration {
        self.rescan_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_RESCAN_INTERVAL)
    }

    /// The host settings: [`HostConfig::default`] with the keys set here.
    pub fn host_config(&self) -> HostConfig {
        let d = HostConfig::default();
        HostConfig {
            cache_directory: self.cache_directory.clone(),
            max_component_bytes: self.max_component_bytes.unwrap_or(d.max_component_bytes),
            compile_memory_bytes: self.compile_memory_bytes.unwrap_or(d.compile_memory_bytes),
            max_instances_per_plugin: self
                .max_instances_per_plugin
                .unwrap_or(d.max_instances_per_plugin),
            ..d
        }
    }

    /// The limits of plugin `name`: built-in defaults, then `defaults`, then
    /// the registration's own.
    pub fn limits_for(&self, name: &str) -> Limits {
        let base = self.defaults.apply(Limits::default());
        match self.plugins.get(name) {
            Some(r) => r.limits.apply(base),
            None => base,
        }
    }
}

impl PluginRegistration {
    /// The settings document as JSON (`{}` when none was given).
    pub fn settings_json(&self) -> String {
        match &self.settings {
            None | Some(serde_json::Value::Null) => "{}".to_owned(),
            Some(v) => v.to_string(),
        }
    }
}

/// Whether `name` can name a plugin: 1-63 lowercase letters, digits or `-`, not at
/// either end (a DNS-1123 label).
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub(super) fn check_limits(key: &str, l: &LimitsOverride) -> anyhow::Result<()> {
    anyhow::ensure!(l.fuel != Some(0), "{key}.fuel: must be positive");
    anyhow::ensure!(
        l.timeout_ms != Some(0),
        "{key}.timeout_ms: must be positive"
    );
    anyhow::ensure!(
        l.memory_bytes.is_none_or(|m| m >= 1 << 20),
        "{key}.memory_bytes: must be at least 1 MiB (1048576)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_a_registry() {
        let text = format!(
            r#"
defaults:
  fuel: 5000000
plugins:
  prefixed:
    path: plugins/naming_prefix.wasm
    sha256: {PIN}
    settings:
      prefix: team-a
    limits:
      timeout_ms: 50
  labelled:
    path: /abs/fanout_label.wasm
    sha256: {PIN}
"#
        );
        let reg = PluginRegistry::from_yaml(&text, Path::new("/etc/ecr")).unwrap();
        let p = &reg.plugins["prefixed"];
        assert_eq!(p.path, Path::new("/etc/ecr/plugins/naming_prefix.wasm"));
        assert_eq!(p.settings_json(), r#"{"prefix":"team-a"}"#);
        assert_eq!(
            reg.plugins["labelled"].path,
            Path::new("/abs/fanout_label.wasm")
        );
        assert_eq!(reg.plugins["labelled"].settings_json(), "{}");
        let l = reg.limits_for("prefixed");
        assert_eq!(l.fuel, 5_000_000);
        assert_eq!(l.timeout, Duration::from_millis(50));
        assert_eq!(l.memory_bytes, Limits::default().memory_bytes);
        assert_eq!(
            reg.limits_for("labelled").timeout,
            Limits::default().timeout
        );
    }

    #[test]
    fn host_keys_make_the_host_config() {
        let reg = PluginRegistry::from_yaml(
            "cache_directory: cache\nmax_component_bytes: 1048576\ncompile_memory_bytes: 268435456\nmax_instances_per_plugin: 4\n",
            Path::new("/etc/ecr"),
        )
        .unwrap();
        let h = reg.host_config();
        assert_eq!(
            h.cache_directory.as_deref(),
            Some(Path::new("/etc/ecr/cache"))
        );
        assert_eq!(h.max_component_bytes, 1 << 20);
        assert_eq!(h.compile_memory_bytes, 1 << 28);
        assert_eq!(h.max_instances_per_plugin, 4);
        assert_eq!(h.max_instances, HostConfig::default().max_instances);
        assert_eq!(
            PluginRegistry::default().host_config(),
            HostConfig::default()
        );
        for (text, key) in [
            ("max_component_bytes: 0\n", "max_component_bytes"),
            ("compile_memory_bytes: 1048576\n", "compile_memory_bytes"),
            ("max_instances_per_plugin: 0\n", "max_instances_per_plugin"),
            ("max_instances_per_plugin: 65\n", "max_instances_per_plugin"),
        ] {
            let err = PluginRegistry::from_yaml(text, Path::new(".")).unwrap_err();
            assert!(format!("{err:#}").starts_with(key), "{key}: {err:#}");
        }
    }

    #[test]
    fn empty_file_is_no_plugins() {
        assert!(
            PluginRegistry::from_yaml("", Path::new("."))
                .unwrap()
                .plugins
                .is_empty()
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let cases = [
            (
                format!("plugins:\n  x:\n    path: a.wasm\n    sha256: {PIN}\n    color: red\n"),
                "color",
            ),
            (
                "plugins:\n  x:\n    path: a.wasm\n    sha256: abc\n".to_owned(),
                "plugins.x.sha256",
            ),
            (
                format!("plugins:\n  Bad_Name:\n    path: a.wasm\n    sha256: {PIN}\n"),
                "plugins.Bad_Name",
            ),
            (
                format!(
                    "plugins:\n  x:\n    path: a.wasm\n    sha256: {PIN}\n    limits:\n      fuel: 0\n"
                ),
                "plugins.x.limits.fuel",
            ),
            (format!("plugins:\n  x:\n    sha256: {PIN}\n"), "path"),
        ];
        for (text, key) in cases {
            let err = PluginRegistry::from_yaml(&text, Path::new(".")).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{key}: {err:#}");
        }
    }

    #[test]
    fn load_file_resolves_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugins.yaml");
        std::fs::write(
            &file,
            format!("plugins:\n  n:\n    path: n.wasm\n    sha256: {PIN}\n"),
        )
        .unwrap();
        let reg = PluginRegistry::load_file(&file).unwrap();
        assert_eq!(reg.plugins["n"].path, dir.path().join("n.wasm"));
        let missing = PluginRegistry::load_file(&dir.path().join("nope.yaml")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope.yaml"));
    }
}
