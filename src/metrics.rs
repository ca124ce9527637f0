//! Prometheus metrics (prometheus-client), all prefixed `ecr_token_refresh_`.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `ecr_token_refresh_reconciles_total` | counter | `outcome` | reconciles finished |
//! | `ecr_token_refresh_reconcile_duration_seconds` | histogram | `outcome` | how long they took |
//! | `ecr_token_refresh_ecr_requests_total` | counter | `outcome` | `GetAuthorizationToken` calls (`success` or the error kind) |
//! | `ecr_token_refresh_sts_calls_total` | counter | `operation`, `outcome` | STS calls for `spec.auth` roles (`AssumeRole`, `AssumeRoleWithWebIdentity`; `success` or the error kind) |
//! | `ecr_token_refresh_token_cache_lookups_total` | counter | `result` | lookups in the shared token cache, one per (resource, token key) a reconcile needs: `hit` (a held token served), `miss` (nothing held: an ECR call), `refresh` (the held one was not fresh enough: an ECR call), `shared` (served by a call another resource made meanwhile) |
//! | `ecr_token_refresh_secrets_written_total` | counter | `reason` | pull Secrets written (`Created`, `Refreshed`, `Repaired`) |
//! | `ecr_token_refresh_retries_total` | counter | `reason` | failed reconciles retried after a backoff, by the `Ready` reason (`ECRAccessDenied`, `SecretWriteFailed`, …) |
//! | `ecr_token_refresh_plugin_calls_total` | counter | `plugin`, `hook`, `outcome` | policy plugin calls (`ok`, or why they failed) |
//! | `ecr_token_refresh_plugin_failures_total` | counter | `plugin`, `hook`, `reason` | the failed ones |
//! | `ecr_token_refresh_plugin_call_duration_seconds` | histogram | `plugin`, `hook` | plugin call time |
//! | `ecr_token_refresh_plugin_loads_total` | counter | `plugin`, `outcome` | plugin loads: `loaded`, `failed` (nothing serves), `rejected` (a replacement refused, the previous version serves), `removed` |
//! | `ecr_token_refresh_plugin_loaded` | gauge | `plugin` | 1 while a version of the plugin serves, else 0 |
//! | `ecr_token_refresh_token_expires_in_seconds` | gauge | `namespace`, `name` | seconds until the token in a resource's Secret expires, computed at scrape time (negative once expired) |
//! | `ecr_token_refresh_token_expiry_timestamp_seconds` | gauge | `namespace`, `name` | when it expires (Unix time) |
//! | `ecr_token_refresh_registry_checks_total` | counter | `outcome` | credential checks (`spec.verify`): one `GET /v2/` per registry host, `verified`, `rejected`, `unavailable` (5xx, 429) or `unreachable` |
//! | `ecr_token_refresh_secret_write_window` | gauge | | Secret writes allowed in flight now (AIMD between 1 and `controller.write_concurrency`) |
//! | `ecr_token_refresh_secret_write_backoffs_total` | counter | `reason` | writes the API server pushed back on (`429`: written again after `Retry-After`; `5xx`) |
//! | `ecr_token_refresh_leader` | gauge | | 1 while this replica is the leader (or leader election is off), else 0 |
//!
//! Label values are resource names, plugin names and fixed words: never a token.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Outcome label of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// e.g. `refreshed`, `up_to_date`, `token_failed`, `error`.
    pub outcome: String,
}

/// Labels of an STS call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StsCallLabels {
    /// `AssumeRole` or `AssumeRoleWithWebIdentity`.
    pub operation: String,
    /// `success`, or the error kind's label (`access_denied`, `throttled`, …).
    pub outcome: String,
}

/// Result label of a token cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `hit`, `miss`, `refresh` or `shared`.
    pub result: String,
}

/// Reason label of a written Secret.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `Created`, `Refreshed` or `Repaired`.
    pub reason: String,
}

/// Labels of a plugin call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Registered plugin name.
    pub plugin: String,
    /// `naming`, `fanout` or `retry`.
    pub hook: String,
}

/// Labels of a plugin call with its outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginOutcomeLabels {
    /// Registered plugin name.
    pub plugin: String,
    /// `naming`, `fanout` or `retry`.
    pub hook: String,
    /// `ok`, or the failure's label (`trap`, `timeout`, `guardrail`, …).
    pub outcome: String,
}

/// Labels of a failed plugin call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFailureLabels {
    /// Registered plugin name.
    pub plugin: String,
    /// `naming`, `fanout` or `retry`.
    pub hook: String,
    /// The failure's label.
    pub reason: String,
}

/// Labels of a plugin load.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLoadLabels {
    /// Registered plugin name.
    pub plugin: String,
    /// `loaded`, `failed`, `rejected` or `removed`.
    pub outcome: String,
}

/// Label naming one plugin.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginNameLabels {
    /// Registered plugin name.
    pub plugin: String,
}

/// Labels naming one custom resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResourceLabels {
    /// The resource's namespace.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
}

/// Reconcile durations: 1 ms to ~16 s.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Plugin call durations: 50 µs to ~0.8 s.
fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

/// Every metric the operator records. Cheap to share (`Arc<Metrics>`); recording never
/// blocks for long and never fails. A `Metrics` that was never [`register`](Self::register)ed
/// records into nothing anyone reads (tests and tools use [`Metrics::default`]).
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<OutcomeLabels, Counter>,
    reconcile_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    ecr_requests: Family<OutcomeLabels, Counter>,
    registry_checks: Family<OutcomeLabels, Counter>,
    token_lookups: Family<ResultLabels, Counter>,
    sts_calls: Family<StsCallLabels, Counter>,
    secrets_written: Family<ReasonLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    plugin_calls: Family<PluginOutcomeLabels, Counter>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    plugin_duration: Family<PluginLabels, Histogram, fn() -> Histogram>,
    plugin_loads: Family<PluginLoadLabels, Counter>,
    plugin_loaded: Family<PluginNameLabels, Gauge>,
    expiry: Arc<ExpiryCollector>,
    leader: Gauge,
    token_cache_keys: Gauge,
    write_window: Gauge,
    write_throttled: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            ecr_requests: Family::default(),
            registry_checks: Family::default(),
            token_lookups: Family::default(),
            sts_calls: Family::default(),
            secrets_written: Family::default(),
            retries: Family::default(),
            plugin_calls: Family::default(),
            plugin_failures: Family::default(),
            plugin_duration: Family::new_with_constructor(plugin_histogram),
            plugin_loads: Family::default(),
            plugin_loaded: Family::default(),
            expiry: Arc::new(ExpiryCollector::default()),
            leader: Gauge::default(),
            token_cache_keys: Gauge::default(),
            write_window: Gauge::default(),
            write_throttled: Family::default(),
        }
    }
}

impl Metrics {
    /// A registry (prefix `ecr_token_refresh`) holding these metrics.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("ecr_token_refresh");
        self.register(&mut registry);
        registry
    }

    /// Registers every metric in `registry` (whose prefix, if any, is prepended).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciles",
            "Reconciles of ECRTokenRefresh resources, by outcome",
            self.reconciles.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, by outcome",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register(
            "ecr_requests",
            "ECR GetAuthorizationToken calls, by outcome (success or the error kind)",
            self.ecr_requests.clone(),
        );
        registry.register(
            "registry_checks",
            "Credential checks (spec.verify), one GET /v2/ per registry host, by outcome \
             (verified, rejected, unavailable, unreachable)",
            self.registry_checks.clone(),
        );
        registry.register(
            "token_cache_lookups",
            "Lookups in the shared token cache, by result (hit, miss, refresh, shared)",
            self.token_lookups.clone(),
        );
        registry.register(
            "sts_calls",
            "STS calls for the roles of spec.auth, by operation (AssumeRole, \
             AssumeRoleWithWebIdentity) and outcome (success or the error kind)",
            self.sts_calls.clone(),
        );
        registry.register(
            "secrets_written",
            "Pull Secrets written, by reason (Created, Refreshed, Repaired)",
            self.secrets_written.clone(),
        );
        registry.register(
            "retries",
            "Reconciles that failed and are retried after a backoff, by reason",
            self.retries.clone(),
        );
        registry.register(
            "plugin_calls",
            "Policy plugin calls, by plugin, hook and outcome",
            self.plugin_calls.clone(),
        );
        registry.register(
            "plugin_failures",
            "Failed policy plugin calls, by plugin, hook and reason",
            self.plugin_failures.clone(),
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Time one policy plugin call took, by plugin and hook",
            Unit::Seconds,
            self.plugin_duration.clone(),
        );
        registry.register(
            "plugin_loads",
            "Policy plugin loads, by plugin and outcome (loaded, failed, rejected: a \
             replacement refused while the previous version serves, removed)",
            self.plugin_loads.clone(),
        );
        registry.register(
            "plugin_loaded",
            "1 while a version of the policy plugin serves calls, else 0",
            self.plugin_loaded.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica reconciles (is the leader, or leader election is off), else 0",
            self.leader.clone(),
        );
        registry.register(
            "token_cache_keys",
            "Token keys (identity, region, FIPS, private or ECR Public) the shared token cache \
             holds a token or a call for",
            self.token_cache_keys.clone(),
        );
        registry.register(
            "secret_write_window",
            "Secret writes the operator may have in flight now (AIMD between 1 and \
             controller.write_concurrency)",
            self.write_window.clone(),
        );
        registry.register(
            "secret_write_backoffs",
            "Secret writes the API server pushed back on (reason 429: throttled, written again \
             after Retry-After; 5xx: overloaded), each halving the write window",
            self.write_throttled.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&self.expiry)));
    }

    /// One reconcile finished with `outcome` after `duration`.
    pub fn reconcile_done(&self, outcome: &str, duration: Duration) {
        let labels = OutcomeLabels {
            outcome: outcome.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// One `GetAuthorizationToken` call finished: `success`, or the error kind's label.
    pub fn ecr_call(&self, outcome: &str) {
        self.ecr_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One credential check of a registry host finished: `verified`, `rejected`,
    /// `unavailable` or `unreachable`.
    pub fn registry_check(&self, outcome: &str) {
        self.registry_checks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One STS call finished: `operation` is `AssumeRole` or `AssumeRoleWithWebIdentity`,
    /// `outcome` `success` or the error kind's label.
    pub fn sts_call(&self, operation: &str, outcome: &str) {
        self.sts_calls
            .get_or_create(&StsCallLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One lookup in the shared token cache: `hit`, `miss`, `refresh` or `shared`
    /// ([`crate::ecr::Lookup::label`]).
    pub fn token_lookup(&self, result: &str) {
        self.token_lookups
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// One pull Secret was written (`reason`: `Created`, `Refreshed`, `Repaired`).
    pub fn secret_written(&self, reason: &str) {
        self.secrets_written(reason, 1);
    }

    /// `count` pull Secrets written for `reason` (`Created`, `Refreshed`, `Repaired`).
    pub fn secrets_written(&self, reason: &str, count: usize) {
        self.secrets_written
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// A reconcile failed and is retried later: `reason` is the `Ready` reason (e.g.
    /// `ECRAccessDenied`, `SecretWriteFailed`) or the Kubernetes error's label.
    pub fn retry(&self, reason: &str) {
        self.retries
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// One policy plugin call finished: `outcome` is `ok` or the failure's label.
    pub fn plugin_call(&self, plugin: &str, hook: &str, outcome: &str, duration: Duration) {
        self.plugin_calls
            .get_or_create(&PluginOutcomeLabels {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if outcome != "ok" {
            self.plugin_failures
                .get_or_create(&PluginFailureLabels {
                    plugin: plugin.to_owned(),
                    hook: hook.to_owned(),
                    reason: outcome.to_owned(),
                })
                .inc();
        }
        self.plugin_duration
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Plugin `plugin` was loaded, refused or removed (`outcome`: `loaded`, `failed`,
    /// `rejected`, `removed`).
    pub fn plugin_load(&self, plugin: &str, outcome: &str) {
        self.plugin_loads
            .get_or_create(&PluginLoadLabels {
                plugin: plugin.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Whether a version of plugin `plugin` serves calls now.
    pub fn set_plugin_loaded(&self, plugin: &str, loaded: bool) {
        self.plugin_loaded
            .get_or_create(&PluginNameLabels {
                plugin: plugin.to_owned(),
            })
            .set(i64::from(loaded));
    }

    /// The token now in the Secret of resource `namespace/name` expires at `expires_at`.
    pub fn token_expiry(&self, namespace: &str, name: &str, expires_at: Timestamp) {
        self.expiry.set(
            ResourceLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            expires_at,
        );
    }

    /// Drops the expiry series of a resource that is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.expiry.remove(&ResourceLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Keeps the expiry series only of the resources for which `keep(namespace, name)`.
    pub fn retain_expiry(&self, keep: impl Fn(&str, &str) -> bool) {
        self.expiry.retain(|l| keep(&l.namespace, &l.name));
    }

    /// Sets the gauge of the keys the shared token cache holds
    /// ([`crate::ecr::TokenCache::len`]).
    pub fn set_token_cache_keys(&self, keys: usize) {
        self.token_cache_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// How many keys the shared token cache held when last looked at.
    pub fn token_cache_keys(&self) -> i64 {
        self.token_cache_keys.get()
    }

    /// Sets the write-window gauge.
    pub fn set_write_window(&self, limit: usize) {
        self.write_window
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// A Secret write the API server pushed back on: `reason` is `429` or `5xx`.
    pub fn write_throttled(&self, reason: &str) {
        self.write_throttled
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Seconds until the token of `namespace/name` expires, as a scrape would show it.
    pub fn expires_in(&self, namespace: &str, name: &str) -> Option<f64> {
        self.expiry
            .get(&ResourceLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .map(|t| seconds_until(Timestamp::now(), t))
    }
}

fn seconds_until(now: Timestamp, t: Timestamp) -> f64 {
    t.duration_since(now).as_secs_f64()
}

/// The token expiry per resource; the "expires in" gauge is computed when scraped, so it
/// counts down between refreshes.
#[derive(Debug, Default)]
struct ExpiryCollector {
    expiries: Mutex<BTreeMap<ResourceLabels, Timestamp>>,
}

impl ExpiryCollector {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ResourceLabels, Timestamp>> {
        self.expiries.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set(&self, labels: ResourceLabels, t: Timestamp) {
        self.lock().insert(labels, t);
    }
    fn remove(&self, labels: &ResourceLabels) {
        self.lock().remove(labels);
    }
    fn retain(&self, keep: impl Fn(&ResourceLabels) -> bool) {
        self.lock().retain(|l, _| keep(l));
    }
    fn get(&self, labels: &ResourceLabels) -> Option<Timestamp> {
        self.lock().get(labels).copied()
    }
}

impl Collector for ExpiryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let snapshot: Vec<(ResourceLabels, Timestamp)> =
            self.lock().iter().map(|(l, t)| (l.clone(), *t)).collect();
        {
            let mut family = encoder.encode_descriptor(
                "token_expires_in",
                "Seconds until the token in the resource's pull Secret expires (negative once expired)",
                Some(&Unit::Seconds),
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (labels, t) in &snapshot {
                let gauge = ConstGauge::new(seconds_until(now, *t));
                gauge.encode(family.encode_family(labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "token_expiry_timestamp",
            "When the token in the resource's pull Secret expires, as Unix time",
            Some(&Unit::Seconds),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, t) in &snapshot {
            let gauge = ConstGauge::new(t.as_millisecond() as f64 / 1000.0);
            gauge.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// The registry in Prometheus text exposition format (version 0.0.4).
pub fn encode_text(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn records_and_encodes_every_family() {
        let m = Metrics::default();
        let registry = m.registry();
        m.reconcile_done("refreshed", Duration::from_millis(20));
        m.reconcile_done("refreshed", Duration::from_millis(40));
        m.reconcile_done("token_failed", Duration::from_millis(5));
        m.ecr_call("success");
        m.ecr_call("throttled");
        m.sts_call("AssumeRole", "success");
        m.sts_call("AssumeRoleWithWebIdentity", "access_denied");
        m.secret_written("Created");
        m.plugin_call("prefixed", "naming", "ok", Duration::from_micros(80));
        m.plugin_call("prefixed", "naming", "timeout", Duration::from_millis(100));
        let expires = Timestamp::now() + jiff::SignedDuration::from_hours(12);
        m.token_expiry("apps", "creds", expires);
        m.set_leader(true);

        let text = encode_text(&registry);
        let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        assert_eq!(
            get(r#"ecr_token_refresh_reconciles_total{outcome="refreshed"}"#),
            2.0
        );
        assert_eq!(
            get(r#"ecr_token_refresh_reconcile_duration_seconds_count{outcome="refreshed"}"#),
            2.0
        );
        assert!(
            (get(r#"ecr_token_refresh_reconcile_duration_seconds_sum{outcome="refreshed"}"#)
                - 0.06)
                .abs()
                < 1e-9
        );
        assert_eq!(
            get(r#"ecr_token_refresh_ecr_requests_total{outcome="throttled"}"#),
            1.0
        );
        assert_eq!(
            get(r#"ecr_token_refresh_sts_calls_total{operation="AssumeRole",outcome="success"}"#),
            1.0
        );
        assert_eq!(
            get(
                r#"ecr_token_refresh_sts_calls_total{operation="AssumeRoleWithWebIdentity",outcome="access_denied"}"#
            ),
            1.0
        );
        assert_eq!(
            get(r#"ecr_token_refresh_secrets_written_total{reason="Created"}"#),
            1.0
        );
        assert_eq!(
            get(
                r#"ecr_token_refresh_plugin_calls_total{plugin="prefixed",hook="naming",outcome="ok"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                r#"ecr_token_refresh_plugin_failures_total{plugin="prefixed",hook="naming",reason="timeout"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                r#"ecr_token_refresh_plugin_call_duration_seconds_count{plugin="prefixed",hook="naming"}"#
            ),
            2.0
        );
        let left =
            get(r#"ecr_token_refresh_token_expires_in_seconds{namespace="apps",name="creds"}"#);
        assert!((left - 43_200.0).abs() < 5.0, "{left}");
        let at = get(
            r#"ecr_token_refresh_token_expiry_timestamp_seconds{namespace="apps",name="creds"}"#,
        );
        assert!((at - expires.as_second() as f64).abs() < 1.0, "{at}");
        assert_eq!(get("ecr_token_refresh_leader"), 1.0);
        assert!(
            text.contains("# TYPE ecr_token_refresh_token_expires_in_seconds gauge"),
            "{text}"
        );

        m.forget("apps", "creds");
        let text = encode_text(&registry);
        assert!(!text.contains(r#"name="creds""#), "{text}");
    }

    #[test]
    fn retain_drops_gone_resources() {
        let m = Metrics::default();
        let t = Timestamp::now();
        m.token_expiry("a", "keep", t);
        m.token_expiry("a", "gone", t);
        m.retain_expiry(|_, name| name == "keep");
        assert!(m.expires_in("a", "keep").is_some());
        assert!(m.expires_in("a", "gone").is_none());
    }
}
