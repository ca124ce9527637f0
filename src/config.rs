//! The operator configuration: one typed document, read with figment from built-in
//! defaults, then a file (YAML or TOML), then environment variables.
//!
//! - The file comes from `--config PATH` or, without it, from the environment variable
//!   [`CONFIG_PATH_ENV`]; without either, only defaults and the environment apply.
//!   `.yaml`, `.yml` and `.json` files are read as YAML, `.toml` as TOML.
//! - Every key can be overridden by an environment variable: [`ENV_PREFIX`] followed by
//!   the key path in upper case, `__` between levels:
//!   `ECR_TOKEN_REFRESH_REFRESH__MARGIN=45m`, `ECR_TOKEN_REFRESH_LOG__FORMAT=json`,
//!   `ECR_TOKEN_REFRESH_WATCH__NAMESPACES=apps,team-b`.
//! - Unknown keys and bad values stop start-up with [`ConfigError`], whose message names
//!   each offending key and where its value came from (the file, or the variable).
//!
//! Durations use the Go syntax of the custom resource's `frequency` (`30s`, `1h30m`).
//! `config/operator.yaml` documents every key; [`LoadedConfig::explain`] prints the
//! effective configuration with the source of each value (`ecr-token-refresh config`).

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::access::{AccessConfig, AccessRules};
use crate::api::parse_go_duration;
use crate::controller::{ScheduleSettings, Settings};
use crate::policy::{BuiltinRetry, PluginRegistry, PluginsError, Policies, Reloader};
use crate::registry_check::{self, VerifySettings};
use crate::telemetry::LogFormat;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ECR_TOKEN_REFRESH_";
/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "ECR_TOKEN_REFRESH_CONFIG";

/// The whole operator configuration. Every section and key has a default that reproduces
/// the original operator (all namespaces, built-in policies, no leader election).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// Which custom resources to watch.
    pub watch: WatchConfig,
    /// Refresh timing and retry backoff.
    pub refresh: RefreshConfig,
    /// Reconcile loop tuning.
    pub controller: ControllerConfig,
    /// Policy plugins the cluster owner registers (custom resources select them by name),
    /// with per-plugin limits.
    pub policy: PluginRegistry,
    /// Which resources may fan Secrets out beyond their own namespace.
    pub fanout: FanoutConfig,
    /// Which namespaces may use which registries and identities (see [`crate::access`]).
    /// No rules (the default): all of them.
    pub access: AccessConfig,
    /// The credential check after a refresh (`spec.verify`, see [`crate::registry_check`]).
    pub verify: VerifyConfig,
    /// The HTTP server for `/metrics`, `/healthz` and `/readyz`.
    pub server: ServerConfig,
    /// Leader election between replicas.
    pub leader_election: LeaderElectionConfig,
    /// Log output.
    pub log: LogConfig,
    /// Trace export.
    pub telemetry: TelemetryConfig,
}

/// Which custom resources to watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Namespaces whose `ECRTokenRefresh` objects are reconciled, like the original
    /// operator's `WATCH_NAMESPACES`; empty (the default) means all namespaces. The
    /// operator opens one watch per namespace for each kind it reads, so it needs
    /// permissions in those namespaces only (no ClusterRole); it then does not fan out.
    /// In the environment either a list or comma-separated names:
    /// `ECR_TOKEN_REFRESH_WATCH__NAMESPACES=apps,team-b` (or `=[apps, team-b]`).
    #[serde(deserialize_with = "namespace_list")]
    pub namespaces: Vec<String>,
}

/// A list of names, or one string of comma-separated names (spaces around names ignored,
/// an empty string is an empty list).
fn namespace_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of namespace names, or comma-separated names")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                out.push(name);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor)
}

/// Refresh timing and retry backoff (Go durations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// Refresh at least this long before a token expires (at most half its lifetime).
    /// Default `30m`.
    pub margin: GoDuration,
    /// Never refresh one resource more often than this, even when ECR reports an expiry in
    /// the past. Default `60s`.
    pub min_interval: GoDuration,
    /// Bound of the first retry delay after a failure (built-in retry policy); doubles per
    /// attempt, with full jitter. Default `1s`.
    pub backoff_base: GoDuration,
    /// Longest retry delay; retries go on at this pace. Default `5m`.
    pub backoff_max: GoDuration,
    /// How often a resource blocked by a Secret it does not own is looked at again.
    /// Default `60s`.
    pub conflict_recheck: GoDuration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        let s = Settings::default();
        Self {
            margin: GoDuration(s.schedule.refresh_margin),
            min_interval: GoDuration(s.schedule.min_refresh_interval),
            backoff_base: GoDuration(BuiltinRetry::default().base),
            backoff_max: GoDuration(BuiltinRetry::default().cap),
            conflict_recheck: GoDuration(s.conflict_recheck),
        }
    }
}

/// Reconcile loop tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// How many resources are reconciled at once. Default 8.
    pub concurrency: u16,
    /// The most Secret writes in flight at once, across the operator: the ceiling of the
    /// adaptive write window (it halves on a 429 or 5xx, waits out a 429's `Retry-After`,
    /// and grows back by one per window of successful writes). Default 16.
    pub write_concurrency: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            concurrency: Settings::default().concurrency,
            write_concurrency: Settings::default().write_concurrency,
        }
    }
}

/// The credential check after a refresh (`spec.verify`): one `GET https://<host>/v2/` per
/// registry with the new credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// `spec.verify` of resources that do not set it. Default `false`.
    pub default: bool,
    /// How long one check may take before the registry counts as unreachable. Default `10s`.
    pub timeout: GoDuration,
    /// How soon a check that could not reach a registry is tried again. Default `5m`.
    pub recheck: GoDuration,
    /// Base URL (`http://127.0.0.1:5000`) every check is sent to instead of
    /// `https://<host>` (the `Host` header still names the registry), for tests and
    /// stand-ins. Default: none, the registry itself.
    pub endpoint: Option<String>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        let s = VerifySettings::default();
        Self {
            default: s.default,
            timeout: GoDuration(s.timeout),
            recheck: GoDuration(s.recheck),
            endpoint: None,
        }
    }
}

impl VerifyConfig {
    /// The checker's settings (an endpoint that does not parse is left out: validation
    /// reports it).
    pub fn settings(&self) -> VerifySettings {
        VerifySettings {
            default: self.default,
            timeout: self.timeout.0,
            recheck: self.recheck.0,
            endpoint: self
                .endpoint()
                .and_then(|e| registry_check::parse_endpoint(e).ok()),
        }
    }

    /// `endpoint`, with an empty value meaning none.
    fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref().filter(|e| !e.is_empty())
    }

    fn problems(&self, bad: &mut impl FnMut(&str, String)) {
        for (key, d) in [
            ("verify.timeout", self.timeout),
            ("verify.recheck", self.recheck),
        ] {
            if d.0.is_zero() {
                bad(key, "must be positive".into());
            }
        }
        if let Some(Err(e)) = self.endpoint().map(registry_check::parse_endpoint) {
            bad("verify.endpoint", e.to_string());
        }
    }
}

/// Cross-namespace fan-out permissions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Namespaces whose resources may write Secrets into other namespaces (through a
    /// fan-out plugin). Empty (the default): every resource writes only into its own
    /// namespace.
    pub allowed_source_namespaces: Vec<String>,
}

/// The metrics and health HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address of `/metrics`, `/healthz` and `/readyz`. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    /// Elect a leader among replicas; only the leader reconciles. Default `false` (one
    /// replica; the install files turn it on).
    pub enabled: bool,
    /// Name of the Lease. Default `ecr-token-refresh-leader`.
    pub lease_name: String,
    /// Namespace of the Lease. Default: `POD_NAMESPACE`, else the client's default
    /// namespace (the pod's own namespace in a cluster).
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease. Default: `POD_NAME`, else the host name.
    pub identity: Option<String>,
    /// How long a Lease stays valid without renewal: a standby takes over this long after
    /// the leader stopped renewing. Whole seconds; default `15s`.
    pub lease_duration: GoDuration,
    /// The leader renews this long before its Lease would expire. Whole seconds, less
    /// than `lease_duration`; default `5s`.
    pub renew_margin: GoDuration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_name: "ecr-token-refresh-leader".into(),
            lease_namespace: None,
            identity: None,
            lease_duration: GoDuration(Duration::from_secs(15)),
            renew_margin: GoDuration(Duration::from_secs(5)),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter in `RUST_LOG` syntax: a level (`info`, `debug`, …) optionally followed
    /// by per-target directives (`info,ecr_token_refresh=debug`). Noisy dependencies stay
    /// at `warn` unless named here. `RUST_LOG`, when set, replaces it. Default `info`.
    pub level: String,
    /// `text` (human-readable lines) or `json` (one object per line). Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Trace export. The endpoint, protocol, service name, resource attributes and sampler
/// come from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. `false` never exports. Default `true`.
    pub otlp: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp: true }
    }
}

/// A duration written in Go syntax (`90s`, `1h30m`, `500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `time.Duration.String` for whole milliseconds: `1h30m0s` is
    /// written `1h30m`, `0` as `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let mut out = String::new();
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if n > 0 {
                let _ = write!(out, "{n}{unit}");
            }
        }
        f.write_str(&out)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as \"30s\", \"5m\" or \"1h30m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_duration(v)
                    .map(GoDuration)
                    .map_err(|e| E::custom(format!("{v:?} is not a Go duration: {e}")))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Why the configuration cannot be used. The message lists every problem found, each
/// naming the key and where its value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named by `--config` or [`CONFIG_PATH_ENV`] cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file's name does not say YAML or TOML.
    #[error(
        "config file {0}: unknown format; name it *.yaml, *.yml, *.json (read as YAML) or *.toml"
    )]
    UnknownFormat(PathBuf),
    /// Keys or values are wrong.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// The effective configuration together with where each value came from.
pub struct LoadedConfig {
    /// The configuration, validated, plugin paths made absolute.
    pub config: OperatorConfig,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedConfig")
            .field("config", &self.config)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Values given on the command line, applied over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// Labels a provider's values with a fixed source name.
struct Labeled<P> {
    inner: P,
    name: &'static str,
}

impl<P: Provider> Provider for Labeled<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// The environment overrides, with metadata that names the actual variable.
struct EnvOverrides;

impl EnvOverrides {
    fn env() -> Env {
        Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])
    }
    fn var_name(keys: &[&str]) -> String {
        let path: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!("{ENV_PREFIX}{}", path.join("__"))
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_: &Profile, keys: &[&str]| EnvOverrides::var_name(keys))
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Self::env().data()
    }
}

/// Reads the configuration: defaults, then `file` (or the file named by
/// [`CONFIG_PATH_ENV`]), then the environment, then `cli`; validates it.
///
/// # Errors
/// [`ConfigError`] naming the file, or every bad key and its source.
pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<LoadedConfig, ConfigError> {
    let file = file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty());
    let mut figment = Figment::from(Labeled {
        inner: Serialized::defaults(OperatorConfig::default()),
        name: "default",
    });
    if let Some(path) = &file {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ConfigError::Read {
                path: path.clone(),
                source,
            });
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        figment = match ext.as_deref() {
            Some("yaml" | "yml" | "json") => figment.merge(Yaml::file_exact(path)),
            Some("toml") => figment.merge(Toml::file_exact(path)),
            _ => return Err(ConfigError::UnknownFormat(path.clone())),
        };
    }
    figment = figment.merge(EnvOverrides);
    if let Some(format) = cli.log_format {
        figment = figment.merge(Labeled {
            inner: Serialized::default("log.format", format),
            name: "command line (--log-format)",
        });
    }
    let mut config: OperatorConfig = figment
        .extract()
        .map_err(|e| ConfigError::Invalid(describe_figment_errors(e)))?;
    let loaded_from = |key: &str| source_of(&figment, key);
    resolve_plugin_paths(&mut config, &figment);
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(
            problems
                .into_iter()
                .map(|(key, msg)| format!("{key}: {msg} (from {})", loaded_from(&key)))
                .collect(),
        ));
    }
    Ok(LoadedConfig {
        config,
        file,
        figment,
    })
}

/// One line per figment error: `key: problem (from source)`.
fn describe_figment_errors(errors: figment::Error) -> Vec<String> {
    errors
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            let kind = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    // figment's path usually ends with the unknown key already.
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    format!("unknown key (expected one of: {})", expected.join(", "))
                }
                kind => kind.to_string(),
            };
            let key = if path.is_empty() {
                "(top level)".to_string()
            } else {
                path.join(".")
            };
            let from = match &e.metadata {
                Some(md) => describe_source(md, &e.path),
                None => "unknown source".into(),
            };
            format!("{key}: {kind} (from {from})")
        })
        .collect()
}

fn describe_source<S: AsRef<str>>(md: &Metadata, keys: &[S]) -> String {
    match &md.source {
        Some(Source::File(path)) => format!("file {}", path.display()),
        _ if md.name == "environment variable" => {
            format!(
                "environment variable {}",
                md.interpolate(&Profile::Default, keys)
            )
        }
        _ => md.name.to_string(),
    }
}

/// Where the value of `key` (dotted path) came from, for messages.
fn source_of(figment: &Figment, key: &str) -> String {
    // A problem may name a key below the deepest value present (e.g. a map key): walk up.
    let mut parts: Vec<&str> = key.split('.').collect();
    while !parts.is_empty() {
        if let Some(md) = figment.find_metadata(&parts.join(".")) {
            return describe_source(md, &parts);
        }
        parts.pop();
    }
    "default".into()
}

/// Relative plugin paths (and `policy.directory`, `policy.cache_directory`) are relative to
/// the config file that names them.
fn resolve_plugin_paths(config: &mut OperatorConfig, figment: &Figment) {
    for (key, dir) in [
        ("policy.directory", config.policy.directory.as_mut()),
        (
            "policy.cache_directory",
            config.policy.cache_directory.as_mut(),
        ),
    ] {
        if let Some(dir) = dir
            && dir.is_relative()
            && let Some(Source::File(file)) =
                figment.find_metadata(key).and_then(|m| m.source.as_ref())
            && let Some(parent) = file.parent()
        {
            *dir = parent.join(&*dir);
        }
    }
    for (name, reg) in config.policy.plugins.iter_mut() {
        if reg.path.is_relative() {
            let key = format!("policy.plugins.{name}.path");
            if let Some(Source::File(file)) =
                figment.find_metadata(&key).and_then(|m| m.source.as_ref())
                && let Some(dir) = file.parent()
            {
                reg.path = dir.join(&reg.path);
            }
        }
    }
}

impl OperatorConfig {
    /// Checks the rules one key's type cannot express.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with one line per problem, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(
                problems
                    .into_iter()
                    .map(|(k, m)| format!("{k}: {m}"))
                    .collect(),
            ))
        }
    }

    /// `(key, problem)` pairs.
    fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut bad = |key: &str, msg: String| out.push((key.to_string(), msg));

        for (i, ns) in self.watch.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                bad(
                    &format!("watch.namespaces.{i}"),
                    format!("{ns:?} is not a namespace name"),
                );
            } else if self.watch.namespaces[..i].contains(ns) {
                bad(
                    &format!("watch.namespaces.{i}"),
                    format!("{ns:?} is listed twice"),
                );
            }
        }
        for (i, ns) in self.fanout.allowed_source_namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                bad(
                    &format!("fanout.allowed_source_namespaces.{i}"),
                    format!("{ns:?} is not a namespace name"),
                );
            }
        }
        if let Err(invalid) = AccessRules::compile(&self.access) {
            for rule in invalid {
                bad(&rule.key, rule.message);
            }
        }

        let r = &self.refresh;
        for (key, d) in [
            ("refresh.min_interval", r.min_interval),
            ("refresh.backoff_base", r.backoff_base),
            ("refresh.backoff_max", r.backoff_max),
            ("refresh.conflict_recheck", r.conflict_recheck),
        ] {
            if d.0.is_zero() {
                bad(key, "must be positive".into());
            }
        }
        if r.backoff_base > r.backoff_max {
            bad(
                "refresh.backoff_base",
                format!(
                    "{} is longer than refresh.backoff_max ({})",
                    r.backoff_base, r.backoff_max
                ),
            );
        }
        if r.margin.0 >= Duration::from_secs(12 * 3600) {
            bad(
                "refresh.margin",
                format!(
                    "{} is not shorter than an ECR token's 12 h lifetime",
                    r.margin
                ),
            );
        }
        self.verify.problems(&mut bad);
        if self.controller.concurrency == 0 {
            bad("controller.concurrency", "must be at least 1".into());
        }
        if self.controller.write_concurrency == 0 {
            bad("controller.write_concurrency", "must be at least 1".into());
        }

        let le = &self.leader_election;
        if !is_dns_subdomain(&le.lease_name) {
            bad(
                "leader_election.lease_name",
                format!("{:?} is not a valid object name", le.lease_name),
            );
        }
        if let Some(ns) = &le.lease_namespace
            && !is_dns_label(ns)
        {
            bad(
                "leader_election.lease_namespace",
                format!("{ns:?} is not a namespace name"),
            );
        }
        if le.identity.as_deref() == Some("") {
            bad("leader_election.identity", "must not be empty".into());
        }
        for (key, d) in [
            ("leader_election.lease_duration", le.lease_duration),
            ("leader_election.renew_margin", le.renew_margin),
        ] {
            if d.0.subsec_nanos() != 0 || d.0.is_zero() {
                bad(
                    key,
                    format!("{d} must be a positive whole number of seconds"),
                );
            }
        }
        if le.renew_margin >= le.lease_duration {
            bad(
                "leader_election.renew_margin",
                format!(
                    "{} must be shorter than leader_election.lease_duration ({})",
                    le.renew_margin, le.lease_duration
                ),
            );
        }

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad(
                "log.level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            );
        }

        if let Err(e) = self.policy.validate() {
            // The registry's messages start with the key below `policy`.
            let msg = format!("{e:#}");
            let (key, rest) = msg.split_once(": ").unwrap_or(("", msg.as_str()));
            let key = if key.is_empty() {
                "policy".to_string()
            } else {
                format!("policy.{key}")
            };
            bad(&key, rest.to_string());
        }
        out
    }

    /// The controller's settings.
    // `..Settings::default()` keeps fields the controller adds later at their defaults.
    #[allow(clippy::needless_update)]
    pub fn controller_settings(&self) -> Settings {
        Settings {
            namespaces: self.watch.namespaces.clone(),
            schedule: ScheduleSettings {
                refresh_margin: self.refresh.margin.0,
                min_refresh_interval: self.refresh.min_interval.0,
                ..ScheduleSettings::default()
            },
            conflict_recheck: self.refresh.conflict_recheck.0,
            concurrency: self.controller.concurrency,
            write_concurrency: self.controller.write_concurrency,
            fanout_sources: self
                .fanout
                .allowed_source_namespaces
                .iter()
                .cloned()
                .collect(),
            // A validated configuration always compiles; an unvalidated one that does not
            // refuses everything rather than open access.
            access: AccessRules::compile(&self.access).unwrap_or_else(|_| AccessRules::deny_all()),
            verify: self.verify.settings(),
            ..Settings::default()
        }
    }
}

impl OperatorConfig {
    /// The policies: the registered plugins of the config file and of `policy.directory`
    /// (compiled and loaded here, so this blocks: call it outside the async workers; the
    /// directory is read once) and the built-in retry with `refresh.backoff_*`.
    ///
    /// # Errors
    /// [`PluginsError`]: a plugin name in both the config file and the directory, or a
    /// directory that cannot be listed.
    pub fn policies(&self) -> Result<Policies, PluginsError> {
        Ok(Policies::try_load(&self.policy, self.policy.host_config())?
            .with_builtin_retry(self.builtin_retry()))
    }

    /// The policies of a running operator: registered at once, compiled in the background
    /// and kept live by the returned [`Reloader`] (see [`Policies::start`]). Blocks while
    /// the plugins directory is read.
    ///
    /// # Errors
    /// As [`policies`](Self::policies).
    pub fn live_policies(&self) -> Result<(Policies, Reloader), PluginsError> {
        let (policies, reloader) = Policies::start(&self.policy, self.policy.host_config())?;
        Ok((policies.with_builtin_retry(self.builtin_retry()), reloader))
    }

    fn builtin_retry(&self) -> BuiltinRetry {
        BuiltinRetry {
            base: self.refresh.backoff_base.0,
            cap: self.refresh.backoff_max.0,
            ..BuiltinRetry::default()
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Keys whose values are never printed (matched case-insensitively anywhere in a key).
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "secret",
    "token",
    "credential",
    "apikey",
    "api_key",
    "authorization",
];

const REDACTED: &str = "<redacted>";

impl LoadedConfig {
    /// The effective configuration as YAML, each value followed by a comment saying where
    /// it came from (`default`, `file PATH`, `environment variable NAME`, command line).
    /// Values under keys that look secret (`*password*`, `*token*`, `*secret*`, …) are
    /// printed as `<redacted>`.
    pub fn explain(&self) -> String {
        let value = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        let mut out = String::new();
        match &self.file {
            Some(f) => {
                let _ = writeln!(out, "# config file: {}", f.display());
            }
            None => out.push_str("# config file: none (defaults and environment only)\n"),
        }
        let _ = writeln!(
            out,
            "# environment overrides: {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}LOG__LEVEL"
        );
        self.explain_value(&value, &mut Vec::new(), 0, &mut out);
        out.push_str(&describe_watch(&self.config.watch.namespaces));
        out.push_str(&self.config.access.describe());
        out.push_str(&describe_trace_export(self.config.telemetry.otlp));
        out
    }

    fn explain_value(
        &self,
        value: &Value,
        path: &mut Vec<String>,
        indent: usize,
        out: &mut String,
    ) {
        let Value::Object(map) = value else { return };
        for (key, v) in map {
            path.push(key.clone());
            let pad = "  ".repeat(indent);
            let secret = is_secret_key(key);
            let nested =
                matches!(v, Value::Object(m) if !m.is_empty()) && !secret && key != "settings";
            let items = match v {
                Value::Array(items) if !secret && items.iter().any(Value::is_object) => Some(items),
                _ => None,
            };
            if nested {
                let _ = writeln!(out, "{pad}{key}:");
                self.explain_value(v, path, indent + 1, out);
            } else if let Some(items) = items {
                // A list of maps (access rules): one item per block, one key per line.
                let from = source_of(&self.figment, &path.join("."));
                let _ = writeln!(out, "{pad}{key}:  # {from}");
                for item in items {
                    let item = redact(item.clone());
                    let Value::Object(fields) = &item else {
                        let _ = writeln!(out, "{pad}  - {}", inline_yaml(&item));
                        continue;
                    };
                    for (i, (k, v)) in fields.iter().enumerate() {
                        let lead = if i == 0 { "- " } else { "  " };
                        let _ = writeln!(out, "{pad}  {lead}{k}: {}", inline_yaml(v));
                    }
                }
            } else {
                let shown = if secret {
                    Value::String(REDACTED.into())
                } else {
                    redact(v.clone())
                };
                let _ = writeln!(
                    out,
                    "{pad}{key}: {}  # {}",
                    inline_yaml(&shown),
                    source_of(&self.figment, &path.join("."))
                );
            }
            path.pop();
        }
    }
}

/// One comment line saying which namespaces are watched, and how.
fn describe_watch(namespaces: &[String]) -> String {
    match namespaces {
        [] => {
            "# watch: all namespaces (one cluster-wide watch per kind; fan-out possible)\n".into()
        }
        names => format!(
            "# watch: {} namespace{} ({}), one watch per namespace and kind; no fan-out\n",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
    }
}

/// One comment line saying whether and where traces go (from the `OTEL_*` variables);
/// credentials in the endpoint URL are not shown.
fn describe_trace_export(enabled: bool) -> String {
    use crate::telemetry::otel;
    if !enabled {
        return "# traces: not exported (telemetry.otlp is false)\n".into();
    }
    let Some(endpoint) = otel::endpoint_from_env() else {
        return "# traces: not exported (OTEL_EXPORTER_OTLP_ENDPOINT is not set)\n".into();
    };
    let shown = match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}{path}"),
                None => endpoint.clone(),
            }
        }
        None => endpoint.clone(),
    };
    match otel::protocol_from_env() {
        Ok(protocol) => format!("# traces: exported over OTLP {protocol} to {shown}\n"),
        Err(e) => format!("# traces: {e}\n"),
    }
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|p| k.contains(p))
}

/// Replaces the values of secret-looking keys anywhere inside `v`.
fn redact(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    if is_secret_key(&k) {
                        (k, Value::String(REDACTED.into()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

/// A value on one line: scalars as YAML, arrays and maps in flow (JSON) syntax.
fn inline_yaml(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => serde_yaml::to_string(s)
            .map(|y| y.trim_end().to_string())
            .unwrap_or_else(|_| format!("{s:?}")),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    const PIN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn err_text(r: Result<LoadedConfig, ConfigError>) -> String {
        r.expect_err("configuration should be refused").to_string()
    }

    #[test]
    fn defaults_validate_and_match_the_controller_defaults() {
        let c = OperatorConfig::default();
        c.validate().unwrap();
        let s = c.controller_settings();
        let d = Settings::default();
        assert!(s.namespaces.is_empty());
        assert_eq!(s.schedule, d.schedule);
        assert_eq!(s.concurrency, d.concurrency);
        assert_eq!(s.conflict_recheck, d.conflict_recheck);
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(!c.leader_election.enabled);
    }

    #[test]
    fn the_trace_export_line_hides_credentials_in_the_endpoint() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:hunter2@collector:4318/base",
            );
            jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
            let line = describe_trace_export(true);
            assert_eq!(
                line,
                "# traces: exported over OTLP grpc to http://<redacted>@collector:4318/base\n"
            );
            assert!(describe_trace_export(false).contains("not exported"));
            Ok(())
        });
    }

    #[test]
    fn go_durations_round_trip() {
        for (text, secs) in [
            ("30m", 1800.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
            ("5s", 5.0),
        ] {
            let d: GoDuration = serde_json::from_value(Value::String(text.into())).unwrap();
            assert_eq!(d.0.as_secs_f64(), secs, "{text}");
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(GoDuration(Duration::from_secs(3661)).to_string(), "1h1m1s");
        assert_eq!(GoDuration(Duration::ZERO).to_string(), "0s");
        assert!(serde_json::from_value::<GoDuration>(Value::from(5)).is_err());
        assert!(serde_json::from_value::<GoDuration>(Value::from("0s")).is_err());
    }

    #[test]
    fn file_then_environment_then_command_line() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "operator.yaml",
                "refresh:\n  margin: 45m\n  backoff_base: 2s\ncontroller:\n  concurrency: 3\nlog:\n  format: json\n",
            )?;
            jail.set_env("ECR_TOKEN_REFRESH_CONTROLLER__CONCURRENCY", "5");
            jail.set_env("ECR_TOKEN_REFRESH_LEADER_ELECTION__LEASE_NAME", "from-env");
            let path = jail.directory().join("operator.yaml");

            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            let c = &loaded.config;
            assert_eq!(
                c.refresh.margin.0,
                Duration::from_secs(45 * 60),
                "file beats default"
            );
            assert_eq!(
                c.refresh.backoff_max.0,
                Duration::from_secs(300),
                "default kept"
            );
            assert_eq!(c.controller.concurrency, 5, "environment beats file");
            assert_eq!(c.leader_election.lease_name, "from-env");
            assert_eq!(c.log.format, LogFormat::Json);

            let cli = CliOverrides {
                log_format: Some(LogFormat::Text),
            };
            let loaded2 = load(Some(&path), &cli).unwrap();
            assert_eq!(
                loaded2.config.log.format,
                LogFormat::Text,
                "command line beats file"
            );

            let explained = loaded.explain();
            let line = |key: &str| {
                explained
                    .lines()
                    .find(|l| l.trim_start().starts_with(&format!("{key}:")))
                    .unwrap_or_else(|| panic!("no {key} in\n{explained}"))
                    .to_string()
            };
            assert!(
                line("margin").contains("45m  # file ") && line("margin").contains("operator.yaml"),
                "{explained}"
            );
            assert!(
                line("backoff_max").ends_with("5m  # default"),
                "{explained}"
            );
            assert!(
                line("concurrency").ends_with(
                    "5  # environment variable ECR_TOKEN_REFRESH_CONTROLLER__CONCURRENCY"
                ),
                "{explained}"
            );
            assert!(line("format").contains("json  # file "), "{explained}");
            Ok(())
        });
    }

    #[test]
    fn the_config_file_can_come_from_the_environment_and_be_toml() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "op.toml",
                "[refresh]\nmin_interval = \"2m\"\n[server]\nlisten = \"127.0.0.1:9090\"\n",
            )?;
            jail.set_env(CONFIG_PATH_ENV, jail.directory().join("op.toml").display());
            let loaded = load(None, &CliOverrides::default()).unwrap();
            assert_eq!(
                loaded.config.refresh.min_interval.0,
                Duration::from_secs(120)
            );
            assert_eq!(
                loaded.config.server.listen,
                "127.0.0.1:9090".parse().unwrap()
            );
            assert!(loaded.file.is_some());
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("operator.yaml", "refresh:\n  margn: 45m\n")?;
            let path = jail.directory().join("operator.yaml");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(msg.contains("refresh.margn: unknown key"), "{msg}");
            assert!(msg.contains("operator.yaml"), "{msg}");

            jail.create_file("top.yaml", "colour: blue\n")?;
            let msg = err_text(load(
                Some(&jail.directory().join("top.yaml")),
                &CliOverrides::default(),
            ));
            assert!(msg.contains("colour: unknown key"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_environment_key_names_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("ECR_TOKEN_REFRESH_LOG__COLOUR", "red");
            let msg = err_text(load(None, &CliOverrides::default()));
            assert!(msg.contains("log.colour: unknown key"), "{msg}");
            assert!(msg.contains("environment variable"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_and_the_source() {
        Jail::expect_with(|jail| {
            jail.create_file("operator.yaml", "refresh:\n  margin: soon\n")?;
            let path = jail.directory().join("operator.yaml");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(
                msg.contains("refresh.margin:") && msg.contains("not a Go duration"),
                "{msg}"
            );
            assert!(msg.contains("operator.yaml"), "{msg}");

            jail.create_file("operator.yaml", "log:\n  format: xml\n")?;
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(msg.contains("log.format:") && msg.contains("xml"), "{msg}");

            // A type error from the environment names the variable.
            jail.create_file("operator.yaml", "")?;
            jail.set_env("ECR_TOKEN_REFRESH_CONTROLLER__CONCURRENCY", "many");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(msg.contains("controller.concurrency:"), "{msg}");
            assert!(
                msg.contains("ECR_TOKEN_REFRESH_CONTROLLER__CONCURRENCY"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn several_watched_namespaces_from_the_file_or_comma_separated_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("operator.yaml", "watch:\n  namespaces: [apps, team-b]\n")?;
            let path = jail.directory().join("operator.yaml");
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            assert_eq!(loaded.config.watch.namespaces, ["apps", "team-b"]);
            assert_eq!(
                loaded.config.controller_settings().namespaces,
                ["apps", "team-b"]
            );
            let explained = loaded.explain();
            assert!(
                explained.contains(
                    "# watch: 2 namespaces (apps, team-b), one watch per namespace and kind"
                ),
                "{explained}"
            );

            // Like the original WATCH_NAMESPACES: comma-separated, spaces ignored.
            jail.set_env("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", "apps, team-b,team-c");
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            assert_eq!(loaded.config.watch.namespaces, ["apps", "team-b", "team-c"]);
            let explained = loaded.explain();
            assert!(
                explained.contains("ECR_TOKEN_REFRESH_WATCH__NAMESPACES"),
                "{explained}"
            );
            // ...or figment's list syntax; one name alone is a list of one.
            jail.set_env("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", "[apps, team-b]");
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            assert_eq!(loaded.config.watch.namespaces, ["apps", "team-b"]);
            jail.set_env("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", "apps");
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            assert_eq!(loaded.config.watch.namespaces, ["apps"]);
            // An empty value: every namespace.
            jail.set_env("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", "");
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            assert!(loaded.config.watch.namespaces.is_empty());
            assert!(loaded.explain().contains("# watch: all namespaces"));
            Ok(())
        });
    }

    #[test]
    fn each_watched_namespace_is_checked_and_none_twice() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "operator.yaml",
                "watch:\n  namespaces: [apps, Team-B, apps, team-c, \"-x\", team-c]\n",
            )?;
            let path = jail.directory().join("operator.yaml");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(
                msg.contains("watch.namespaces.1: \"Team-B\" is not a namespace name (from file"),
                "{msg}"
            );
            assert!(
                msg.contains("watch.namespaces.2: \"apps\" is listed twice"),
                "{msg}"
            );
            assert!(
                msg.contains("watch.namespaces.4: \"-x\" is not a namespace name"),
                "{msg}"
            );
            assert!(
                msg.contains("watch.namespaces.5: \"team-c\" is listed twice"),
                "{msg}"
            );
            assert!(!msg.contains("watch.namespaces.0"), "{msg}");
            assert!(!msg.contains("watch.namespaces.3"), "{msg}");

            jail.create_file("operator.yaml", "")?;
            jail.set_env("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", "apps,apps");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(
                msg.contains("watch.namespaces.1: \"apps\" is listed twice (from environment variable ECR_TOKEN_REFRESH_WATCH__NAMESPACES)"),
                "{msg}"
            );
            // A name over 63 characters.
            let long = "a".repeat(64);
            jail.set_env("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", &long);
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(msg.contains("watch.namespaces.0:"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn cross_field_rules_name_the_key_and_the_source() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "operator.yaml",
                "refresh:\n  backoff_base: 10m\nleader_election:\n  lease_duration: 5s\n  renew_margin: 5s\n",
            )?;
            jail.set_env("ECR_TOKEN_REFRESH_CONTROLLER__CONCURRENCY", "0");
            let path = jail.directory().join("operator.yaml");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(
                msg.contains("refresh.backoff_base: 10m is longer than refresh.backoff_max (5m)"),
                "{msg}"
            );
            assert!(msg.contains("leader_election.renew_margin:"), "{msg}");
            assert!(
                msg.contains("controller.concurrency: must be at least 1 (from environment variable ECR_TOKEN_REFRESH_CONTROLLER__CONCURRENCY)"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_missing_or_unknown_file_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            let msg = err_text(load(
                Some(Path::new("/nonexistent/operator.yaml")),
                &CliOverrides::default(),
            ));
            assert!(msg.contains("/nonexistent/operator.yaml"), "{msg}");
            jail.create_file("operator.ini", "")?;
            let msg = err_text(load(
                Some(&jail.directory().join("operator.ini")),
                &CliOverrides::default(),
            ));
            assert!(
                msg.contains("operator.ini") && msg.contains("unknown format"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn plugins_are_registered_in_the_policy_section_relative_to_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "operator.yaml",
                &format!(
                    "policy:\n  defaults:\n    timeout_ms: 50\n  plugins:\n    prefixed:\n      path: plugins/naming_prefix.wasm\n      sha256: {PIN}\n      settings:\n        prefix: team-a\n        api_token: hunter2\n"
                ),
            )?;
            let path = jail.directory().join("operator.yaml");
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            let reg = &loaded.config.policy.plugins["prefixed"];
            assert_eq!(
                reg.path,
                jail.directory().join("plugins/naming_prefix.wasm")
            );
            assert_eq!(
                loaded.config.policy.limits_for("prefixed").timeout,
                Duration::from_millis(50)
            );
            let explained = loaded.explain();
            assert!(!explained.contains("hunter2"), "{explained}");
            assert!(explained.contains("<redacted>"), "{explained}");
            assert!(explained.contains("team-a"), "{explained}");

            jail.create_file(
                "operator.yaml",
                "policy:\n  plugins:\n    x:\n      path: a.wasm\n      sha256: abc\n",
            )?;
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(msg.contains("policy.plugins.x.sha256:"), "{msg}");
            assert!(msg.contains("operator.yaml"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn the_verify_section_reaches_the_controller_and_names_bad_keys() {
        Jail::expect_with(|jail| {
            jail.create_file("operator.yaml", "verify:\n  default: true\n  timeout: 3s\n")?;
            let path = jail.directory().join("operator.yaml");
            jail.set_env(
                "ECR_TOKEN_REFRESH_VERIFY__ENDPOINT",
                "http://127.0.0.1:5000",
            );
            let loaded = load(Some(&path), &CliOverrides::default()).unwrap();
            let v = loaded.config.controller_settings().verify;
            assert!(v.default);
            assert_eq!(v.timeout, Duration::from_secs(3));
            assert_eq!(v.recheck, VerifySettings::default().recheck);
            assert_eq!(
                v.endpoint.map(|u| u.to_string()),
                Some("http://127.0.0.1:5000/".to_string())
            );
            assert_eq!(
                OperatorConfig::default().controller_settings().verify,
                VerifySettings::default()
            );

            jail.set_env("ECR_TOKEN_REFRESH_VERIFY__ENDPOINT", "http://x/v2/");
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(
                msg.contains("verify.endpoint:")
                    && msg.contains("without a path")
                    && msg.contains("ECR_TOKEN_REFRESH_VERIFY__ENDPOINT"),
                "{msg}"
            );
            jail.set_env("ECR_TOKEN_REFRESH_VERIFY__ENDPOINT", "");
            jail.create_file("operator.yaml", "verify:\n  recheck: 0s\n")?;
            let msg = err_text(load(Some(&path), &CliOverrides::default()));
            assert!(msg.contains("verify.recheck:"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn the_committed_example_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/operator.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: OperatorConfig = serde_yaml::from_str(&text).unwrap();
        example.validate().unwrap();
        // Every key of the configuration appears in the example, so it documents them all.
        let example_value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        fn keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
            if let Value::Object(m) = v {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if k != "plugins" {
                        keys(v, &p, out);
                    }
                    out.push(p);
                }
            }
        }
        let mut all = Vec::new();
        keys(
            &serde_json::to_value(OperatorConfig::default()).unwrap(),
            "",
            &mut all,
        );
        let mut documented = Vec::new();
        keys(
            &serde_json::to_value(&example_value).unwrap(),
            "",
            &mut documented,
        );
        // Optional keys without a default are documented as comments (`# key: example`).
        let commented: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('#'))
            .filter_map(|l| l.trim_start().split_once(':'))
            .map(|(k, _)| k.trim())
            .collect();
        for key in all {
            assert!(
                documented.contains(&key)
                    || commented.contains(&key.rsplit('.').next().unwrap_or_default()),
                "config/operator.yaml does not mention {key}"
            );
        }
    }
}
