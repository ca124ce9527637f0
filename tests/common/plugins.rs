//! Builds the policy plugins under `plugins/` for wasm32-wasip2, once per
//! test binary, and finds their `.wasm` files.
//!
//! Include with `#[path = "common/plugins.rs"] mod plugins;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (where the operator's Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directory holding the built `.wasm` files; builds the plugin workspace on
/// first use (`cargo build --release --target wasm32-wasip2`, target dir
/// `plugins/target`). Panics with a clear message if the build fails.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let target = root.join("plugins/target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("plugins/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("cannot run cargo to build the policy plugins");
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("target may not be installed") || stderr.contains("can't find crate for `core`") {
                panic!(
                    "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`\n{stderr}"
                );
            }
            panic!("building the policy plugins failed:\n{stderr}");
        }
        target.join("wasm32-wasip2/release")
    })
}

/// Path of a built plugin, by crate name (`naming-prefix` or `naming_prefix`).
pub fn wasm(crate_name: &str) -> PathBuf {
    let p = wasm_dir().join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        p.exists(),
        "plugin {} was not built: {}",
        crate_name,
        p.display()
    );
    p
}

/// Lower-case hex sha256 of a file.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).expect("read plugin");
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
