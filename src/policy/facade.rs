//! The façade the controller uses: selection by name, blocking pool,
//! guardrails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, broadcast};

use super::guard::{self, RetryClamp};
use super::loader::{self, PluginsError, Reloader, log_load};
use super::table::{
    LoadState, PluginEvent, PluginEventKind, PluginSource, PluginStatus, PluginTable, Rejected,
};
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
///
/// The plugin table changes while the operator runs (plugins compiled in the
/// background, the plugins directory, see [`Reloader`]): it is swapped whole, so a
/// call in flight keeps the version it started with. [`subscribe`](Self::subscribe)
/// tells what changed.
pub struct Policies {
    plugins: ArcSwap<PluginTable>,
    host: Option<Arc<PluginHost>>,
    naming: BuiltinNaming,
    fanout: BuiltinFanout,
    retry: BuiltinRetry,
    clamp: RetryClamp,
    permits: Arc<Semaphore>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    changes: broadcast::Sender<PluginEvent>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("plugins", &self.plugins.load())
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

/// How many plugin events a slow subscriber may fall behind before it is told it lagged.
const CHANGES_CAPACITY: usize = 256;

impl Policies {
    /// Built-in policies only (no plugin host).
    pub fn builtin() -> Self {
        Policies {
            plugins: ArcSwap::from_pointee(PluginTable::new()),
            host: None,
            naming: BuiltinNaming,
            fanout: BuiltinFanout,
            retry: BuiltinRetry::default(),
            clamp: RetryClamp::default(),
            permits: Arc::new(Semaphore::new(HostConfig::default().max_instances as usize)),
            metrics: None,
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }

    fn with_table(host: Option<Arc<PluginHost>>, table: PluginTable) -> Self {
        let mut p = Self::builtin();
        if let Some(h) = &host {
            p.permits = Arc::new(Semaphore::new(h.config().max_instances.max(1) as usize));
        }
        p.host = host;
        p.plugins = ArcSwap::from_pointee(table);
        p
    }

    /// Creates a plugin host (only if some plugin is registered, or a plugins directory
    /// is configured) and loads every registered plugin: those of the config file and,
    /// once, those of `policy.directory` (no watching; see [`start`](Self::start)).
    /// Never fails: a plugin (or the host) that cannot be loaded is recorded, logged,
    /// and reported on each use; a directory plugin named like a config one is left
    /// out (logged), as is an unreadable directory.
    ///
    /// Blocking (compiles plugins): call at start-up, outside the async
    /// workers (e.g. in `spawn_blocking`).
    pub fn load(registry: &PluginRegistry, config: HostConfig) -> Self {
        let jobs = loader::startup(registry, false).unwrap_or_default();
        Self::load_jobs(registry, config, jobs)
    }

    /// [`load`](Self::load), except that a name registered both in the config file and
    /// in the plugins directory, or a directory that cannot be listed, is an error.
    ///
    /// # Errors
    /// [`PluginsError`] naming both sources, or the directory.
    pub fn try_load(registry: &PluginRegistry, config: HostConfig) -> Result<Self, PluginsError> {
        let jobs = loader::startup(registry, true)?;
        Ok(Self::load_jobs(registry, config, jobs))
    }

    fn load_jobs(registry: &PluginRegistry, config: HostConfig, jobs: loader::Startup) -> Self {
        if jobs.jobs.is_empty() && registry.directory.is_none() {
            return Self::builtin();
        }
        match PluginHost::new(config) {
            Ok(host) => Self::load_into(registry, Arc::new(host), jobs),
            Err(e) => Self::without_host(&e, jobs),
        }
    }

    fn without_host(e: &anyhow::Error, jobs: loader::Startup) -> Self {
        tracing::error!(error = %format!("{e:#}"), "cannot create the policy plugin host; every plugin is unavailable");
        let table = jobs
            .jobs
            .into_iter()
            .map(|j| {
                let status = PluginStatus {
                    state: LoadState::Failed(LoadError::HostUnavailable(format!("{e:#}"))),
                    ..PluginStatus::loading(j.source)
                };
                (j.name, status)
            })
            .collect();
        Self::with_table(None, table)
    }

    /// Loads every registered plugin into `host` (blocking, see [`load`](Self::load)).
    pub fn with_host(registry: &PluginRegistry, host: Arc<PluginHost>) -> Self {
        let jobs = loader::startup(registry, false).unwrap_or_default();
        Self::load_into(registry, host, jobs)
    }

    fn load_into(registry: &PluginRegistry, host: Arc<PluginHost>, jobs: loader::Startup) -> Self {
        let mut table = PluginTable::new();
        for job in jobs.jobs {
            let loaded = loader::run(&host, registry, &job);
            log_load(&job.name, &job.source, &loaded);
            let state = match loaded {
                Ok(p) => LoadState::Loaded(Arc::new(p)),
                Err(e) => LoadState::Failed(e),
            };
            table.insert(
                job.name,
                PluginStatus {
                    state,
                    ..PluginStatus::loading(job.source)
                },
            );
        }
        Self::with_table(Some(host), table)
    }

    /// The live start: registers every plugin of the config file and of the plugins
    /// directory as *loading* and returns at once (after creating the host and reading
    /// the directory), with the [`Reloader`] that compiles them in the background and
    /// then watches the directory. Spawn it with [`Reloader::spawn`] once the policies
    /// are shared. Until a plugin is loaded, resources selecting it get
    /// [`PolicyError::Loading`].
    ///
    /// Blocking for as long as listing and reading the directory takes.
    ///
    /// # Errors
    /// [`PluginsError`]: a name both in the config file and the directory, or a
    /// directory that cannot be listed.
    pub fn start(
        registry: &PluginRegistry,
        config: HostConfig,
    ) -> Result<(Self, Reloader), PluginsError> {
        let jobs = loader::startup(registry, true)?;
        if jobs.jobs.is_empty() && registry.directory.is_none() {
            return Ok((Self::builtin(), Reloader::idle()));
        }
        match PluginHost::new(config) {
            Ok(host) => {
                let host = Arc::new(host);
                let table = jobs
                    .jobs
                    .iter()
                    .map(|j| (j.name.clone(), PluginStatus::loading(j.source.clone())))
                    .collect();
                let policies = Self::with_table(Some(Arc::clone(&host)), table);
                Ok((policies, Reloader::new(registry.clone(), host, jobs)))
            }
            Err(e) => Ok((Self::without_host(&e, jobs), Reloader::idle())),
        }
    }

    /// Replaces the built-in retry policy.
    pub fn with_builtin_retry(mut self, retry: BuiltinRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Records every plugin call (outcome, duration) in `metrics`.
    ///
    /// Every plugin registered so far gets its `plugin_loaded` sample at once (0 while it
    /// is still compiling), so a dashboard or alert sees a loading plugin as not loaded
    /// rather than as absent.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        for (name, status) in self.plugins.load().iter() {
            metrics.set_plugin_loaded(name, status.loaded().is_some());
        }
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

    /// A loaded plugin by name (the version serving now).
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .load()
            .get(name)
            .and_then(|s| s.loaded().cloned())
    }

    /// Registered plugins that failed to load (and have no version serving), with why.
    pub fn load_errors(&self) -> Vec<(String, LoadError)> {
        self.plugins
            .load()
            .iter()
            .filter_map(|(n, s)| match &s.state {
                LoadState::Failed(e) => Some((n.clone(), e.clone())),
                _ => None,
            })
            .collect()
    }

    /// Every registered plugin now: source, serving version or load state, last refused
    /// replacement.
    pub fn statuses(&self) -> PluginTable {
        self.plugins.load().as_ref().clone()
    }

    /// Whether some plugin is still being compiled.
    pub fn loading(&self) -> bool {
        self.plugins
            .load()
            .values()
            .any(|s| matches!(s.state, LoadState::Loading))
    }

    /// Plugin changes from now on: loaded, failed, refused replacement, removed. A
    /// receiver that falls more than 256 events behind is told it lagged.
    pub fn subscribe(&self) -> broadcast::Receiver<PluginEvent> {
        self.changes.subscribe()
    }

    /// Records the outcome of loading `name` from `source`: a loaded version serves; a
    /// failure keeps an earlier loaded version of the same source serving (recorded as
    /// refused), else the plugin fails. Logs, counts and announces the change.
    pub(super) fn install(
        &self,
        name: &str,
        source: &PluginSource,
        attempted_sha256: &str,
        loaded: Result<LoadedPlugin, LoadError>,
    ) {
        log_load(name, source, &loaded);
        let loaded = loaded.map(Arc::new);
        let mut kind = None;
        self.plugins.rcu(|table| {
            let mut table = PluginTable::clone(table);
            let previous = table.get(name).filter(|s| &s.source == source);
            let (status, k) = match (&loaded, previous.and_then(PluginStatus::loaded)) {
                (Ok(p), _) => (
                    PluginStatus {
                        source: source.clone(),
                        state: LoadState::Loaded(Arc::clone(p)),
                        rejected: None,
                    },
                    PluginEventKind::Loaded {
                        sha256: p.sha256().to_owned(),
                    },
                ),
                (Err(e), Some(serving)) => (
                    PluginStatus {
                        source: source.clone(),
                        state: LoadState::Loaded(Arc::clone(serving)),
                        rejected: Some(Rejected {
                            sha256: attempted_sha256.to_owned(),
                            error: e.clone(),
                        }),
                    },
                    PluginEventKind::Rejected(e.clone()),
                ),
                (Err(e), None) => (
                    PluginStatus {
                        source: source.clone(),
                        state: LoadState::Failed(e.clone()),
                        rejected: None,
                    },
                    PluginEventKind::Failed(e.clone()),
                ),
            };
            table.insert(name.to_owned(), status);
            kind = Some(k);
            table
        });
        if let Some(kind) = kind {
            self.announce(name, kind);
        }
    }

    /// Registers `name` from `source` as loading, unless it is registered already (a
    /// replacement: the previous version serves meanwhile).
    pub(super) fn mark_loading(&self, name: &str, source: &PluginSource) {
        self.plugins.rcu(|table| {
            let mut table = PluginTable::clone(table);
            table
                .entry(name.to_owned())
                .or_insert_with(|| PluginStatus::loading(source.clone()));
            table
        });
        self.publish_loaded(name);
    }

    /// Sets the `plugin_loaded` gauge of `name` from the table: 1 while a version serves.
    fn publish_loaded(&self, name: &str) {
        if let Some(m) = &self.metrics {
            let loaded = self
                .plugins
                .load()
                .get(name)
                .is_some_and(|s| s.loaded().is_some());
            m.set_plugin_loaded(name, loaded);
        }
    }

    /// Records that a file in the plugins directory was refused without replacing what
    /// serves under `name` (e.g. it is named like a config file plugin).
    pub(super) fn refuse(&self, name: &str, sha256: &str, error: LoadError) {
        tracing::error!(plugin = %name, %sha256, error = %error, "policy plugin file refused");
        self.plugins.rcu(|table| {
            let mut table = PluginTable::clone(table);
            if let Some(s) = table.get_mut(name) {
                s.rejected = Some(Rejected {
                    sha256: sha256.to_owned(),
                    error: error.clone(),
                });
            }
            table
        });
        self.announce(name, PluginEventKind::Rejected(error));
    }

    /// Unregisters `name` if it comes from `source`; returns whether it did.
    pub(super) fn remove(&self, name: &str, source: &PluginSource) -> bool {
        let mut removed = false;
        self.plugins.rcu(|table| {
            let mut table = PluginTable::clone(table);
            removed = table.get(name).is_some_and(|s| &s.source == source);
            if removed {
                table.remove(name);
            } else if let Some(s) = table.get_mut(name) {
                // A refused file of the same name left: nothing is refused any more.
                s.rejected = None;
            }
            table
        });
        if removed {
            tracing::warn!(plugin = %name, source = %source.describe(name), "policy plugin removed; resources selecting it fail");
            self.announce(name, PluginEventKind::Removed);
        }
        removed
    }

    fn announce(&self, name: &str, kind: PluginEventKind) {
        if let Some(m) = &self.metrics {
            m.plugin_load(name, kind.label());
        }
        self.publish_loaded(name);
        // No subscriber (no controller yet) is fine: it reads the table when it starts.
        let _ = self.changes.send(PluginEvent {
            plugin: name.to_owned(),
            kind,
        });
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
        let table = self.plugins.load();
        match table.get(name).map(|s| &s.state) {
            None => Err(PolicyError::NotRegistered {
                plugin: name.to_owned(),
                hook,
            }),
            Some(LoadState::Loading) => Err(PolicyError::Loading {
                plugin: name.to_owned(),
                hook,
            }),
            Some(LoadState::Failed(error)) => Err(PolicyError::LoadFailed {
                plugin: name.to_owned(),
                hook,
                error: error.clone(),
            }),
            Some(LoadState::Loaded(p)) if !p.has_hook(hook) => Err(PolicyError::LoadFailed {
                plugin: name.to_owned(),
                hook,
                error: LoadError::MissingHook(hook),
            }),
            Some(LoadState::Loaded(p)) => Ok(Arc::clone(p)),
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
