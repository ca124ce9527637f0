//! The policy traits implemented by a WebAssembly plugin.

use std::sync::Arc;
use std::time::Duration;

use super::{
    CrInfo, Failure, FanoutPolicy, LoadedPlugin, NamespaceInfo, NamingPolicy, PolicyError,
    RetryDecision, RetryPolicy,
};

/// A loaded plugin used as a policy: every call runs in a fresh session
/// (new `Store`, new instance) under the plugin's limits.
///
/// Answers are returned as the plugin gave them; the guardrails are applied
/// by [`Policies`](super::Policies) (or explicitly with [`guard`](super::guard)).
/// Calls block the current thread for up to the plugin's deadline: call them
/// from a blocking context.
#[derive(Debug, Clone)]
pub struct WasmPolicy {
    plugin: Arc<LoadedPlugin>,
}

impl WasmPolicy {
    /// Wraps a loaded plugin.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Self {
        WasmPolicy { plugin }
    }

    /// The underlying plugin.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }
}

impl NamingPolicy for WasmPolicy {
    fn secret_name(&self, cr: &CrInfo, target_namespace: &str) -> Result<String, PolicyError> {
        self.plugin.session().secret_name(cr, target_namespace)
    }
}

impl FanoutPolicy for WasmPolicy {
    fn select(
        &self,
        cr: &CrInfo,
        candidates: &[NamespaceInfo],
    ) -> Result<Vec<String>, PolicyError> {
        self.plugin.session().select_namespaces(cr, candidates)
    }
}

impl RetryPolicy for WasmPolicy {
    fn decide(
        &self,
        cr: &CrInfo,
        failure: &Failure,
        token_expires_in: Option<Duration>,
    ) -> Result<RetryDecision, PolicyError> {
        self.plugin
            .session()
            .decide_retry(cr, failure, token_expires_in)
    }
}
