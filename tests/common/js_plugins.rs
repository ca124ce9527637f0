//! Builds the JavaScript policy plugins under `plugins/js/` (componentize-qjs, pinned in
//! `plugins/js/package-lock.json`) once per test binary, and finds their `.wasm` files.
//!
//! Needs `npm ci` to have run in `plugins/js` (`scripts/setup-test-env.sh` does it when
//! Node.js and npm are installed). Include with
//! `#[path = "common/js_plugins.rs"] mod js_plugins;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The test plugins built besides the examples in `plugins/js/src/`.
const TESTING: &[&str] = &["testing/mapping-probe.js"];

/// `plugins/js` in the repository.
pub fn js_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/js")
}

/// Directory holding this test binary's freshly built JavaScript plugins (every
/// `plugins/js/src/*.js` and the test plugins): `plugins/js/build.sh --out-dir` into a
/// directory of its own under `CARGO_TARGET_TMPDIR`, since JS-built components are not
/// byte-reproducible and another test binary building into a shared directory would
/// change a file under a pinned sha256. Panics with what to run if componentize-qjs is
/// not installed or the build fails.
pub fn js_wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = js_root();
        assert!(
            root.join("node_modules/.bin/componentize-qjs").exists(),
            "componentize-qjs is not installed in {}: run scripts/setup-test-env.sh \
             (or `npm ci` there; needs Node.js >= 18 and npm, e.g. `apt-get install nodejs npm`)",
            root.display()
        );
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("js-plugins")
            .join(env!("CARGO_CRATE_NAME"));
        let _ = std::fs::remove_dir_all(&out);
        let mut sources: Vec<String> = std::fs::read_dir(root.join("src"))
            .expect("read plugins/js/src")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.ends_with(".js").then(|| format!("src/{name}"))
            })
            .collect();
        sources.sort();
        sources.extend(TESTING.iter().map(|s| (*s).to_owned()));
        let built = Command::new(root.join("build.sh"))
            .arg("--out-dir")
            .arg(&out)
            .args(&sources)
            .output()
            .expect("cannot run plugins/js/build.sh");
        assert!(
            built.status.success(),
            "building the JavaScript plugins failed:\n{}{}",
            String::from_utf8_lossy(&built.stdout),
            String::from_utf8_lossy(&built.stderr)
        );
        out
    })
}

/// Path of a built JavaScript plugin, by source name (`naming-prefix`, `mapping-probe`).
pub fn js_wasm(name: &str) -> PathBuf {
    let p = js_wasm_dir().join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "JavaScript plugin {name} was not built: {}",
        p.display()
    );
    p
}
