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
//!
//! The same builds pack their relative relocations (`-z pack-relative-relocs`, the DT_RELR
//! format): the dynamic loader reads the 52,000 pointers it must relocate at start-up from a
//! 14 KB bitmap instead of a 1.2 MB table (`.rela.dyn`), whose pages would otherwise stay
//! in the operator's resident set (1.2 MiB of its file pages, measured at idle). Such a
//! binary needs glibc 2.36 or later to start (an older one refuses it: "version
//! `GLIBC_ABI_DT_RELR' not found"), so they are packed only when the build's own glibc is
//! that new: a native build with the default linker (a configured linker, such as
//! cargo-zigbuild's, may link against another glibc). The image's build and runtime are
//! Debian 12, glibc 2.36. Set `ECR_TOKEN_REFRESH_PACK_RELOCS=0` to leave it out (a binary
//! for an older glibc).

use std::env;
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let order = dir.join("link").join("symbol-order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=ECR_TOKEN_REFRESH_SYMBOL_ORDER");
    println!("cargo::rerun-if-env-changed=ECR_TOKEN_REFRESH_PACK_RELOCS");
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
    let pack = !env::var("ECR_TOKEN_REFRESH_PACK_RELOCS").is_ok_and(|v| v == "0");
    if release && target && pack && native() && host_glibc().is_some_and(|v| v >= (2, 36)) {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the build is for the machine it runs on (build scripts run on the host), with
/// the default linker (cargo sets `RUSTC_LINKER` for a configured one).
fn native() -> bool {
    env::var_os("RUSTC_LINKER").is_none()
        && env::var("HOST").is_ok_and(|host| env::var("TARGET").is_ok_and(|target| host == target))
}

/// The (major, minor) version of the host's glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc() -> Option<(u32, u32)> {
    // SAFETY: gnu_get_libc_version takes no arguments and returns a pointer to a static,
    // NUL-terminated string ("2.36").
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let mut parts = version.to_str().ok()?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Not a glibc host: no packed relocations.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc() -> Option<(u32, u32)> {
    None
}
