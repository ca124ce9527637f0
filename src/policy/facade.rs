//! The façade the controller uses: selection by name, blocking pool,
//! guardrails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::guard::{self, RetryClamp};
use super::{
    BuiltinFanout, BuiltinNaming, BuiltinRetry, CrInfo, Failure, FanoutPolicy, Hook, HostConfig,
    LoadError, LoadedPlugin, NamespaceInfo, NamingPolicy, PluginHost, PluginRegistry,
    PluginSession, PolicyError, RetryDecision, RetryPolicy, Violation,
};

/// The plugins a custom resource selects, by registered name (`None` = built-in).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySelection {
    /// Plugin for Secret naming.
    #[serde(default)]
    pub naming: Option<String>,
    /// Plugin for namespace fan-out.
    #[serde(default)]
    pub fanout: Option<String>,
    /// Plugin for retry decisions.
    #[serde(default)]
    pub retry: Option<String>,
}

impl PolicySelection {
    /// The plugin selected for `hook`, if any.
    pub fn for_hook(&self, hook: Hook) -> Option<&str> {
        match hook {
            Hook::Naming => self.naming.as_deref(),
            Hook::Fanout => self.fanout.as_deref(),
            Hook::Retry => self.retry.as_deref(),
        }
    }
}

/// Namespaces a custom resource may write Secrets into (from the operator's
/// configuration, decided by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedNamespaces {
    /// Any namespace (e.g. a cluster-scoped resource, or a configuration that allows it).
    Any,
    /// Only these namespaces.
    Only(BTreeSet<String>),
}

impl AllowedNamespaces {
    /// Only the resource's own namespace (the default for a namespaced resource).
    pub fn own(cr: &CrInfo) -> Self {
        AllowedNamespaces::Only(BTreeSet::from([cr.namespace.clone()]))
    }

    /// Whether `namespace` is allowed.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            AllowedNamespaces::Any => true,
            AllowedNamespaces::Only(set) => set.contains(namespace),
        }
    }
}

/// The three policies for all custom resources: built-ins plus the
/// registered plugins.
///
/// Plugin calls run on tokio's blocking pool (at most
/// [`HostConfig::max_instances`] at once); every plugin answer goes through
/// the guardrails of [`guard`]. A plugin that failed to load is reported on
/// each use, never at construction.
pub struct Policies {
    plugins: BTreeMap<String, Result<Arc<LoadedPlugin>, LoadError>>,
    host: Option<Arc<PluginHost>>,
    naming: BuiltinNaming,
    fanout: BuiltinFanout,
    retry: BuiltinRetry,
    clamp: RetryClamp,
    permits: Arc<Semaphore>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("plugins", &self.plugins)
            .field("retry", &self.retry)
            .field("clamp", &self.clamp)
            .finish_non_exhaustive()
    }
}

impl Default for Policies {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Policies {
    /// Built-in policies only (no plugin host).
    pub fn builtin() -> Self {
        Policies {
            plugins: BTreeMap::new(),
            host: None,
            naming: BuiltinNaming,
            fanout: BuiltinFanout,
            retry: BuiltinRetry::default(),
            clamp: RetryClamp::default(),
            permits: Arc::new(Semaphore::new(HostConfig::default().max_instances as usize)),
            metrics: None,
        }
    }

    /// Creates a plugin host (only if some plugin is registered) and loads
    /// every registered plugin. Never fails: a plugin (or the host) that
    /// cannot be loaded is recorded, logged, and reported on each use.
    ///
    /// Blocking (compiles plugins): call at start-up, outside the async
    /// workers (e.g. in `spawn_blocking`).
    pub fn load(registry: &PluginRegistry, config: HostConfig) -> Self {
        if registry.plugins.is_empty() {
            return Self::builtin();
        }
        match PluginHost::new(config) {
            Ok(host) => Self::with_host(registry, Arc::new(host)),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot create the policy plugin host; every plugin is unavailable");
                let mut p = Self::builtin();
                for name in registry.plugins.keys() {
                    p.plugins.insert(
                        name.clone(),
                        Err(LoadError::HostUnavailable(format!("{e:#}"))),
                    );
                }
                p
            }
        }
    }

    /// Loads every registered plugin into `host` (blocking, see [`load`](Self::load)).
    pub fn with_host(registry: &PluginRegistry, host: Arc<PluginHost>) -> Self {
        let mut p = Self::builtin();
        p.permits = Arc::new(Semaphore::new(host.config().max_instances.max(1) as usize));
        for (name, reg) in &registry.plugins {
            let limits = registry.limits_for(name);
            let loaded = host.load_file(name, &reg.path, &reg.sha256, reg.settings_json(), limits);
            match &loaded {
                Ok(pl) => {
                    tracing::info!(plugin = %name, path = %reg.path.display(), hooks = ?pl.hooks(), "loaded policy plugin")
                }
                Err(e) => {
                    tracing::error!(plugin = %name, path = %reg.path.display(), error = %e, "cannot load policy plugin; resources selecting it will fail")
                }
            }
            p.plugins.insert(name.clone(), loaded.map(Arc::new));
        }
        p.host = Some(host);
        p
    }

    /// Replaces the built-in retry policy.
    pub fn with_builtin_retry(mut self, retry: BuiltinRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Records every plugin call (outcome, duration) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Replaces the retry delay bounds.
    pub fn with_retry_clamp(mut self, clamp: RetryClamp) -> Self {
        self.clamp = clamp;
        self
    }

    /// The built-in retry policy (for the controller's schedule when a retry
    /// plugin fails).
    pub fn builtin_retry(&self) -> &BuiltinRetry {
        &self.retry
    }

    /// The retry delay bounds applied to every decision.
    pub fn retry_clamp(&self) -> &RetryClamp {
        &self.clamp
    }

    /// The plugin host, if any plugin is registered.
    pub fn host(&self) -> Option<&Arc<PluginHost>> {
        self.host.as_ref()
    }

    /// A loaded plugin by name.
    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name).and_then(|r| r.as_ref().ok())
    }

    /// Registered plugins that failed to load, with why.
    pub fn load_errors(&self) -> Vec<(&str, &LoadError)> {
        self.plugins
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|e| (n.as_str(), e)))
            .collect()
    }

    /// Checks that every plugin `selection` names is registered, loaded and
    /// exports the hook it is selected for.
    pub fn check_selection(&self, selection: &PolicySelection) -> Result<(), PolicyError> {
        for hook in Hook::ALL {
            if let Some(name) = selection.for_hook(hook) {
                self.resolve(name, hook)?;
            }
        }
        Ok(())
    }

    /// Whether the fan-out decision for `selection` needs the candidate
    /// namespaces (the built-in does not: it always picks the own namespace).
    pub fn needs_candidates(&self, selection: &PolicySelection) -> bool {
        selection.fanout.is_some()
    }

    fn resolve(&self, name: &str, hook: Hook) -> Result<Arc<LoadedPlugin>, PolicyError> {
        match self.plugins.get(name) {
            None => Err(PolicyError::NotRegistered {
                plugin: name.to_owned(),
                hook,
            }),
            Some(Err(error)) => Err(PolicyError::LoadFailed {
                plugin: name.to_owned(),
                hook,
                error: error.clone(),
            }),
            Some(Ok(p)) if !p.has_hook(hook) => Err(PolicyError::LoadFailed {
                plugin: name.to_owned(),
                hook,
                error: LoadError::MissingHook(hook),
            }),
            Some(Ok(p)) => Ok(Arc::clone(p)),
        }
    }

    /// Runs `f` on a fresh session of plugin `name`, on the blocking pool.
    async fn call_plugin<R, F>(&self, name: &str, hook: Hook, f: F) -> Result<R, PolicyError>
    where
        R: Send + 'static,
        F: FnOnce(&mut PluginSession<'_>) -> Result<R, PolicyError> + Send + 'static,
    {
        let plugin = self.resolve(name, hook)?;
        let internal = |message: String| PolicyError::Internal {
            plugin: name.to_owned(),
            hook,
            message,
        };
        // The plugin's own share of the pool first, then a slot of the pool: a plugin
        // whose calls are all slow holds at most its share and the others keep running.
        let _own = Arc::clone(plugin.call_permits())
            .acquire_owned()
            .await
            .map_err(|e| internal(e.to_string()))?;
        let _permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| internal(e.to_string()))?;
        // One span per call: plugin, hook, outcome (`ok` or the failure's label), fuel used
        // and wall-clock time in microseconds; the same numbers go to the metrics.
        let span = tracing::info_span!(
            "policy.plugin_call",
            plugin = %name,
            %hook,
            outcome = tracing::field::Empty,
            fuel = tracing::field::Empty,
            elapsed_us = tracing::field::Empty
        );
        let metrics = self.metrics.clone();
        let plugin_name = name.to_owned();
        let joined = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut session = plugin.session();
            let result = f(&mut session);
            let stats = session.last_call();
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.metric_label(),
            };
            span.record("outcome", outcome);
            span.record("fuel", stats.fuel_consumed);
            span.record("elapsed_us", stats.elapsed.as_micros() as u64);
            if let Some(m) = &metrics {
                m.plugin_call(&plugin_name, hook.as_str(), outcome, stats.elapsed);
            }
            match &result {
                Ok(_) => tracing::debug!(fuel = stats.fuel_consumed, elapsed = ?stats.elapsed, "policy plugin answered"),
                Err(e) => tracing::warn!(fuel = stats.fuel_consumed, elapsed = ?stats.elapsed, error = %e, reason = e.metric_label(), "policy plugin failed"),
            }
            result
        })
        .await;
        joined.unwrap_or_else(|e| Err(internal(format!("plugin call task failed: {e}"))))
    }

    /// The Secret name for `cr` in `target_namespace`.
    pub async fn secret_name(
        &self,
        selection: &PolicySelection,
        cr: &CrInfo,
        target_namespace: &str,
    ) -> Result<String, PolicyError> {
        let Some(name) = selection.naming.as_deref() else {
            return self.naming.secret_name(cr, target_namespace);
        };
        let (cr2, ns) = (cr.clone(), target_namespace.to_owned());
        let answer = self
            .call_plugin(name, Hook::Naming, move |s| s.secret_name(&cr2, &ns))
            .await?;
        guard::check_secret_name(&answer).map_err(|v| violation(name, Hook::Naming, v))?;
        Ok(answer)
    }

    /// Like [`secret_name`](Self::secret_name), but a plugin is asked twice, each
    /// time in a fresh instance, and two different answers are rejected
    /// ([`Violation::Unstable`]): a plugin whose name changes from call to call
    /// would make the operator create, prune and recreate Secrets in a loop.
    /// The sandbox is deterministic, so this is a guard, not the mechanism; the
    /// controller uses it for the first target of each reconcile only (one extra
    /// call per reconcile, however many namespaces it fans out to).
    pub async fn secret_name_checked(
        &self,
        selection: &PolicySelection,
        cr: &CrInfo,
        target_namespace: &str,
    ) -> Result<String, PolicyError> {
        let Some(name) = selection.naming.as_deref() else {
            return self.naming.secret_name(cr, target_namespace);
        };
        let (cr2, ns) = (cr.clone(), target_namespace.to_owned());
        let answer = self
            .call_plugin(name, Hook::Naming, move |s| {
                let first = s.secret_name(&cr2, &ns)?;
                let second = s.plugin().session().secret_name(&cr2, &ns)?;
                Ok((first, second))
            })
            .await?;
        let answer =
            guard::check_stable_name(answer).map_err(|v| violation(name, Hook::Naming, v))?;
        guard::check_secret_name(&answer).map_err(|v| violation(name, Hook::Naming, v))?;
        Ok(answer)
    }

    /// The namespaces that receive `cr`'s Secret, among `candidates` and
    /// allowed by `allowed`. The built-in ignores both and returns the
    /// resource's own namespace (as the original operator did).
    pub async fn select_namespaces(
        &self,
        selection: &PolicySelection,
        cr: &CrInfo,
        candidates: &[NamespaceInfo],
        allowed: &AllowedNamespaces,
    ) -> Result<Vec<String>, PolicyError> {
        let Some(name) = selection.fanout.as_deref() else {
            return self.fanout.select(cr, candidates);
        };
        let (cr2, cands) = (cr.clone(), candidates.to_vec());
        let answer = self
            .call_plugin(name, Hook::Fanout, move |s| {
                s.select_namespaces(&cr2, &cands)
            })
            .await?;
        guard::check_fanout(answer, candidates.iter().map(|c| c.name.as_str()), &|ns| {
            allowed.allows(ns)
        })
        .map_err(|v| violation(name, Hook::Fanout, v))
    }

    /// What to do after `failure`, with delays clamped by the
    /// [`RetryClamp`] (built-in decisions too) so that retries happen before
    /// the token expires. On a plugin error the controller should schedule
    /// with [`builtin_retry`](Self::builtin_retry) (clamped) and report it.
    pub async fn decide_retry(
        &self,
        selection: &PolicySelection,
        cr: &CrInfo,
        failure: &Failure,
        token_expires_in: Option<Duration>,
    ) -> Result<RetryDecision, PolicyError> {
        let decision = match selection.retry.as_deref() {
            None => self.retry.decide(cr, failure, token_expires_in)?,
            Some(name) => {
                let (cr2, f2) = (cr.clone(), failure.clone());
                self.call_plugin(name, Hook::Retry, move |s| {
                    s.decide_retry(&cr2, &f2, token_expires_in)
                })
                .await?
            }
        };
        Ok(self.clamp.apply(decision, token_expires_in))
    }
}

fn violation(plugin: &str, hook: Hook, violation: Violation) -> PolicyError {
    PolicyError::Guardrail {
        plugin: plugin.to_owned(),
        hook,
        violation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{FailureKind, Jitter};

    fn cr() -> CrInfo {
        CrInfo {
            name: "ecr-credentials".into(),
            namespace: "apps".into(),
            registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn without_plugins_behaves_like_the_original() {
        let p = Policies::builtin();
        let sel = PolicySelection::default();
        assert_eq!(
            p.secret_name(&sel, &cr(), "apps").await.unwrap(),
            "ecr-credentials"
        );
        let ns = p
            .select_namespaces(&sel, &cr(), &[], &AllowedNamespaces::own(&cr()))
            .await
            .unwrap();
        assert_eq!(ns, vec!["apps"]);
        assert!(!p.needs_candidates(&sel));
        let f = Failure {
            kind: FailureKind::Network,
            message: "timeout".into(),
            attempt: 3,
        };
        let p = p.with_builtin_retry(BuiltinRetry {
            jitter: Jitter::None,
            ..BuiltinRetry::default()
        });
        assert_eq!(
            p.decide_retry(&sel, &cr(), &f, None).await.unwrap(),
            RetryDecision::RetryAfter(Duration::from_secs(4))
        );
        // Clamped before expiry: token expires in 6 min, margin 5 min.
        let f9 = Failure { attempt: 9, ..f };
        assert_eq!(
            p.decide_retry(&sel, &cr(), &f9, Some(Duration::from_secs(360)))
                .await
                .unwrap(),
            RetryDecision::RetryAfter(Duration::from_secs(60))
        );
    }

    #[tokio::test]
    async fn unknown_plugin_is_not_registered() {
        let p = Policies::builtin();
        let sel = PolicySelection {
            naming: Some("nope".into()),
            ..Default::default()
        };
        let err = p.secret_name(&sel, &cr(), "apps").await.unwrap_err();
        assert!(matches!(err, PolicyError::NotRegistered { .. }), "{err}");
        assert_eq!(err.hook(), Hook::Naming);
        assert!(p.check_selection(&sel).is_err());
        assert!(p.check_selection(&PolicySelection::default()).is_ok());
    }

    #[test]
    fn allowed_namespaces() {
        assert!(AllowedNamespaces::own(&cr()).allows("apps"));
        assert!(!AllowedNamespaces::own(&cr()).allows("other"));
        assert!(AllowedNamespaces::Any.allows("other"));
    }
}
