//! Compiled components on disk, so that a restart does not recompile.
//!
//! One file per component and engine configuration in the cache directory:
//! `<sha256 of the .wasm>-<engine key>.cwasm`, where the engine key is derived
//! from [`Engine::precompile_compatibility_hash`] (wasmtime version, target,
//! compiler settings). A file holds the bytes of [`Component::serialize`]
//! followed by their SHA-256, and is written to a temporary file in the same
//! directory and renamed into place (readers never see half a file). An entry
//! that is torn, corrupt or from another engine is ignored (and rewritten by
//! the next compilation).
//!
//! Loading an entry runs native code from it: the directory must be writable
//! by the operator only (e.g. an `emptyDir`). The checksum protects against
//! torn writes and bit rot, not against someone who can write there.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::host::wt;

/// Length of the checksum after the serialized component.
const CHECKSUM_BYTES: usize = 32;

/// The compiled-component cache of one engine.
#[derive(Debug)]
pub(super) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds a `Hash` into SHA-256 (stable across Rust releases, unlike
/// `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only finalized as SHA-256")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ArtifactCache {
    /// The cache in `dir` (created if missing) for `engine`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub(super) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let digest = h.0.finalize();
        let engine_key = super::host::hex(&digest[..8]);
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    /// Where the entry of the component with digest `sha256` lives.
    pub(super) fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of `sha256`, if there is a valid one.
    pub(super) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read compiled plugin cache entry; compiling");
                return None;
            }
        };
        let Some(split) = bytes.len().checked_sub(CHECKSUM_BYTES) else {
            tracing::warn!(path = %path.display(), "compiled plugin cache entry is truncated; compiling");
            return None;
        };
        let (body, checksum) = bytes.split_at(split);
        if Sha256::digest(body).as_slice() != checksum {
            tracing::warn!(path = %path.display(), "compiled plugin cache entry is corrupt; compiling");
            return None;
        }
        // SAFETY: `body` was written by `store` below from `Component::serialize`
        // with this engine's configuration (the file name carries its
        // compatibility hash, and wasmtime checks it again), into a directory
        // only the operator writes; the checksum rules out torn or damaged files.
        match unsafe { Component::deserialize(engine, body) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %wt(e), "compiled plugin cache entry is not usable; compiling");
                None
            }
        }
    }

    /// Writes the compilation of `sha256` (atomically: temporary file, then rename).
    ///
    /// # Errors
    /// Serialization or any file operation failed (the cache is then just not
    /// updated; the message names the path).
    pub(super) fn store(&self, sha256: &str, component: &Component) -> Result<(), String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut body = component.serialize().map_err(wt)?;
        let checksum = Sha256::digest(&body);
        body.extend_from_slice(&checksum);
        let path = self.path(sha256);
        let tmp = self.dir.join(format!(
            ".{sha256}.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
    }
}
