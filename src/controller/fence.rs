//! The write fence: once closed (this replica lost its leadership), no Kubernetes write is
//! sent any more, whatever reconcile is in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared switch every write checks first. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<AtomicBool>);

impl Fence {
    /// An open fence (writes allowed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the fence for good: every later write fails with [`super::Error::Fenced`].
    pub fn close(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the fence is closed.
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Ok` while writes are allowed.
    ///
    /// # Errors
    /// [`super::Error::Fenced`] once closed.
    pub fn check(&self) -> Result<(), super::Error> {
        if self.is_closed() {
            Err(super::Error::Fenced)
        } else {
            Ok(())
        }
    }
}
