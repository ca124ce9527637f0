//! Link-time code layout of the release binary.
//!
//! The operator executes about 5 MiB of its 31 MB of machine code, but before this layout
//! that code was spread over most of `.text`: every 4 KiB page it touched stayed in its
//! resident set, and the kernel's fault-around mapped up to 64 KiB of neighbours with it.
//! `link/symbol-order.txt` lists the functions a profiled run executed (start-up, plugin
//! load, a fan-out, watch events, a metrics scrape, shutdown), and the linker places them
//! first and together (lld's `--symbol-ordering-file`), so the code the operator runs fills
//! as few pages as it can. Names the linker does not find (after a dependency or toolchain
//! update) are skipped silently: the binary is the same, only less compact.
//! `scripts/symbol-order.sh` regenerates the list.
//!
//! Applies to release builds (`cargo build --release`, `cargo bench`) for
//! `x86_64-unknown-linux-gnu`, whose default linker is rust-lld. Set
//! `ECR_TOKEN_REFRESH_SYMBOL_ORDER=0` to leave it out (for a linker that is not lld).

use std::env;
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let order = dir.join("link").join("symbol-order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=ECR_TOKEN_REFRESH_SYMBOL_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let off = env::var("ECR_TOKEN_REFRESH_SYMBOL_ORDER").is_ok_and(|v| v == "0");
    if release && target && !off && order.is_file() {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
