//! The plugins directory (`policy.directory`): what is in it, and what changed.
//!
//! Layout: `NAME.wasm` is plugin `NAME` (a valid plugin name, see
//! [`is_plugin_name`]); an optional `NAME.yaml` beside it ([`Sidecar`]) holds its `sha256`
//! pin, `settings` and `limits`. Entries whose name starts with `.` are never plugins:
//! a Kubernetes ConfigMap volume keeps its files in `..2026_12_05_…/` behind the
//! `..data` symlink and links `NAME.wasm -> ..data/NAME.wasm`, swapping `..data`
//! atomically on update. Symlinks are followed and the *content* decides: a plugin
//! changed when the sha256 of its `.wasm` or of its sidecar changed
//! ([`Fingerprint`], [`diff`]), whatever the file-system events said.
//!
//! [`scan`] reads the directory (blocking I/O; plugins are read whole, to hash them and
//! to load exactly the bytes that were hashed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::host::sha256_hex;
use super::registry::{LimitsOverride, check_limits, is_plugin_name};

/// The `NAME.yaml` sidecar of `NAME.wasm`: the keys of a `policy.plugins.NAME` entry
/// of the config file, without `path`.
///
/// ```yaml
/// sha256: 3f1c…e9    # optional unless policy.require_sha256 is set
/// settings:          # handed to the plugin's validate-settings and every call
///   prefix: team-a
/// limits:            # overrides policy.defaults, field by field
///   timeout_ms: 50
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Required sha256 of `NAME.wasm` (64 hex digits); a mismatch refuses the file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The settings document handed to the plugin (`{}` when absent).
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// Limits for this plugin, overriding `policy.defaults` field by field.
    #[serde(default)]
    pub limits: LimitsOverride,
}

impl Sidecar {
    /// Parses and checks a sidecar document (YAML; empty = all defaults). Errors name
    /// the key.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let sidecar: Sidecar = if text.trim().is_empty() {
            Sidecar::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        if let Some(pin) = &sidecar.sha256 {
            let pin = pin.trim();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("sha256: {pin:?} is not 64 hexadecimal digits"));
            }
        }
        check_limits("limits", &sidecar.limits).map_err(|e| e.to_string())?;
        Ok(sidecar)
    }

    /// The settings document as JSON (`{}` when none was given).
    pub fn settings_json(&self) -> String {
        match &self.settings {
            None | Some(serde_json::Value::Null) => "{}".to_owned(),
            Some(v) => v.to_string(),
        }
    }
}

/// What identifies one version of a directory plugin: the digests of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// sha256 of `NAME.wasm` (lower-case hex).
    pub wasm: String,
    /// sha256 of `NAME.yaml`, if there is one.
    pub sidecar: Option<String>,
}

/// One plugin found in the directory.
#[derive(Clone)]
pub struct Found {
    /// `DIR/NAME.wasm`, as listed (before following symlinks).
    pub path: PathBuf,
    /// `DIR/NAME.yaml`, as listed (it may not exist).
    pub sidecar_path: PathBuf,
    /// The digests of the files read.
    pub fingerprint: Fingerprint,
    /// The component's bytes, exactly those hashed.
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// The sidecar: none, parsed, or why it cannot be used.
    pub sidecar: Result<Option<Sidecar>, String>,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .field("bytes", &self.bytes.len())
            .field("sidecar", &self.sidecar)
            .finish()
    }
}

/// What [`scan`] saw: plugins by name, and entries that look like plugins but cannot be
/// used (a bad name, an unreadable file), each with why.
#[derive(Debug, Default)]
pub struct Scan {
    /// Plugins by name.
    pub plugins: BTreeMap<String, Found>,
    /// `(path, problem)` of entries skipped.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Scan {
    /// The fingerprints of the plugins found.
    pub fn fingerprints(&self) -> BTreeMap<String, Fingerprint> {
        self.plugins
            .iter()
            .map(|(n, f)| (n.clone(), f.fingerprint.clone()))
            .collect()
    }
}

/// Why the directory cannot be listed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot list the plugins directory {path} (policy.directory): {reason}")]
pub struct ScanError {
    /// The directory.
    pub path: String,
    /// The I/O error.
    pub reason: String,
}

/// Lists `dir` and reads every `NAME.wasm` (following symlinks) and its `NAME.yaml`.
/// Dot entries (`.x`, `..data`, `..2026_…`) and files of other kinds are ignored.
///
/// # Errors
/// [`ScanError`] when `dir` cannot be listed (missing, not a directory, no permission).
pub fn scan(dir: &Path) -> Result<Scan, ScanError> {
    scan_limited(dir, u64::MAX)
}

/// [`scan`], refusing (without reading it) a `NAME.wasm` larger than `max_bytes`
/// (`policy.max_component_bytes`): it is listed in [`Scan::skipped`] with its size.
///
/// # Errors
/// As [`scan`].
pub fn scan_limited(dir: &Path, max_bytes: u64) -> Result<Scan, ScanError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScanError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut out = Scan::default();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let Some(name) = file_name.strip_suffix(".wasm") else {
            continue;
        };
        let path = dir.join(file_name);
        if !is_plugin_name(name) {
            out.skipped.push((
                path,
                "not a plugin name (1-63 lowercase letters, digits or '-', not at either end)"
                    .into(),
            ));
            continue;
        }
        // Checked before reading: a file over the limit is never read into memory.
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.len() > max_bytes
        {
            out.skipped.push((
                path,
                format!(
                    "component is {} bytes, over the limit of {max_bytes} bytes \
                     (policy.max_component_bytes)",
                    meta.len()
                ),
            ));
            continue;
        }
        // `fs::read` follows symlinks (the ConfigMap layout); a directory fails here too.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                // Gone between listing and reading (a swap in progress): the next scan sees it.
                if e.kind() != std::io::ErrorKind::NotFound {
                    out.skipped.push((path, format!("cannot read: {e}")));
                }
                continue;
            }
        };
        let sidecar_path = dir.join(format!("{name}.yaml"));
        let (sidecar, sidecar_sha) = match std::fs::read(&sidecar_path) {
            Ok(text) => {
                let sha = sha256_hex(&text);
                let parsed = std::str::from_utf8(&text)
                    .map_err(|_| "not UTF-8 text".to_owned())
                    .and_then(Sidecar::from_yaml)
                    .map(Some);
                (parsed, Some(sha))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Ok(None), None),
            Err(e) => (Err(format!("cannot read: {e}")), Some(String::new())),
        };
        out.plugins.insert(
            name.to_owned(),
            Found {
                fingerprint: Fingerprint {
                    wasm: sha256_hex(&bytes),
                    sidecar: sidecar_sha,
                },
                path,
                sidecar_path,
                bytes: std::sync::Arc::new(bytes),
                sidecar,
            },
        );
    }
    Ok(out)
}

/// A change between two scans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A plugin that was not there.
    Added(String),
    /// A plugin whose `.wasm` or sidecar content changed.
    Changed(String),
    /// A plugin whose `.wasm` is gone.
    Removed(String),
}

impl Change {
    /// The plugin concerned.
    pub fn name(&self) -> &str {
        match self {
            Change::Added(n) | Change::Changed(n) | Change::Removed(n) => n,
        }
    }
}

/// The changes from `before` to `after` (fingerprints by name), by name.
pub fn diff(
    before: &BTreeMap<String, Fingerprint>,
    after: &BTreeMap<String, Fingerprint>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, fp) in after {
        match before.get(name) {
            None => out.push(Change::Added(name.clone())),
            Some(old) if old != fp => out.push(Change::Changed(name.clone())),
            Some(_) => {}
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            out.push(Change::Removed(name.clone()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(w: &str, s: Option<&str>) -> Fingerprint {
        Fingerprint {
            wasm: w.into(),
            sidecar: s.map(Into::into),
        }
    }

    #[test]
    fn diff_finds_added_changed_and_removed() {
        let before = BTreeMap::from([
            ("a".to_string(), fp("1", None)),
            ("b".to_string(), fp("2", None)),
            ("c".to_string(), fp("3", Some("x"))),
            ("d".to_string(), fp("4", None)),
        ]);
        let after = BTreeMap::from([
            ("a".to_string(), fp("1", None)),      // same
            ("b".to_string(), fp("2", Some("y"))), // sidecar added
            ("c".to_string(), fp("9", Some("x"))), // new component
            ("e".to_string(), fp("5", None)),      // new
        ]);
        assert_eq!(
            diff(&before, &after),
            vec![
                Change::Added("e".into()),
                Change::Changed("b".into()),
                Change::Changed("c".into()),
                Change::Removed("d".into()),
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn scan_reads_plugins_and_sidecars_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("naming.wasm"), b"component-1").unwrap();
        std::fs::write(
            d.join("naming.yaml"),
            "settings:\n  prefix: team\nlimits:\n  timeout_ms: 50\n",
        )
        .unwrap();
        std::fs::write(d.join("bare.wasm"), b"component-2").unwrap();
        std::fs::write(d.join("broken.wasm"), b"component-3").unwrap();
        std::fs::write(d.join("broken.yaml"), "colour: red\n").unwrap();
        std::fs::write(d.join("Bad_Name.wasm"), b"x").unwrap();
        std::fs::write(d.join(".hidden.wasm"), b"x").unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        std::fs::write(d.join("orphan.yaml"), "settings: {}\n").unwrap();
        std::fs::create_dir(d.join("dir.wasm")).unwrap();

        let scan = scan(d).unwrap();
        assert_eq!(
            scan.plugins.keys().collect::<Vec<_>>(),
            ["bare", "broken", "naming"]
        );
        let naming = &scan.plugins["naming"];
        assert_eq!(naming.fingerprint.wasm, sha256_hex(b"component-1"));
        assert!(naming.fingerprint.sidecar.is_some());
        assert_eq!(naming.bytes.as_slice(), b"component-1");
        let sidecar = naming.sidecar.clone().unwrap().unwrap();
        assert_eq!(sidecar.settings_json(), r#"{"prefix":"team"}"#);
        assert_eq!(sidecar.limits.timeout_ms, Some(50));
        assert_eq!(scan.plugins["bare"].sidecar, Ok(None));
        assert_eq!(scan.plugins["bare"].fingerprint.sidecar, None);
        let err = scan.plugins["broken"].sidecar.clone().unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let skipped: Vec<String> = scan
            .skipped
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            skipped.contains(&"Bad_Name.wasm".to_string()),
            "{skipped:?}"
        );
        assert!(skipped.contains(&"dir.wasm".to_string()), "{skipped:?}");
        assert!(!skipped.iter().any(|s| s.starts_with('.')), "{skipped:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_configmap_style_data_swap_changes_the_fingerprint() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let v1 = d.join("..2026_12_05_10_00_00.1");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("naming.wasm"), b"v1").unwrap();
        symlink("..2026_12_05_10_00_00.1", d.join("..data")).unwrap();
        symlink("..data/naming.wasm", d.join("naming.wasm")).unwrap();
        let first = scan(d).unwrap();
        assert_eq!(first.plugins.keys().collect::<Vec<_>>(), ["naming"]);
        assert_eq!(first.plugins["naming"].bytes.as_slice(), b"v1");

        // Kubernetes writes the new version beside, then renames a new link over `..data`.
        let v2 = d.join("..2026_12_05_10_05_00.2");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("naming.wasm"), b"v2").unwrap();
        symlink("..2026_12_05_10_05_00.2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let second = scan(d).unwrap();
        assert_eq!(
            diff(&first.fingerprints(), &second.fingerprints()),
            vec![Change::Changed("naming".into())]
        );
        // A dangling link (the file left the ConfigMap) is no plugin.
        std::fs::remove_file(v2.join("naming.wasm")).unwrap();
        let third = scan(d).unwrap();
        assert!(third.plugins.is_empty());
        assert_eq!(
            diff(&second.fingerprints(), &third.fingerprints()),
            vec![Change::Removed("naming".into())]
        );
    }

    #[test]
    fn sidecar_errors_name_the_key() {
        assert!(Sidecar::from_yaml("").unwrap().sha256.is_none());
        let e = Sidecar::from_yaml("sha256: abc\n").unwrap_err();
        assert!(e.starts_with("sha256:"), "{e}");
        let e = Sidecar::from_yaml("limits:\n  fuel: 0\n").unwrap_err();
        assert!(e.contains("limits.fuel"), "{e}");
        let e = Sidecar::from_yaml("path: x.wasm\n").unwrap_err();
        assert!(e.contains("path"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let e = scan(Path::new("/nonexistent/plugins")).unwrap_err();
        let big = tempfile::tempdir().unwrap();
        std::fs::write(big.path().join("big.wasm"), vec![0u8; 2048]).unwrap();
        let limited = scan_limited(big.path(), 1024).unwrap();
        assert!(limited.plugins.is_empty());
        assert!(
            limited.skipped[0]
                .1
                .contains("2048 bytes, over the limit of 1024"),
            "{:?}",
            limited.skipped
        );
        assert!(e.to_string().contains("/nonexistent/plugins"), "{e}");
    }
}
