//! `ecr-token-refresh plugin test`: run a plugin's hooks on a YAML case
//! without a cluster, with the operator's limits and guardrails, and print
//! each decision with the fuel and time it used.
//!
//! A case file (see `plugins/examples/case.yaml`):
//!
//! ```yaml
//! settings: { prefix: team-a }        # optional settings document ({} if absent)
//! cr:                                  # the custom resource (camelCase keys)
//!   name: ecr-credentials
//!   namespace: apps
//!   registry: 123456789012.dkr.ecr.us-east-1.amazonaws.com
//!   # accountId / region default to the parts of `registry`
//!   labels: {}
//!   parameters: {}
//! targetNamespace: apps                # naming: default cr.namespace
//! namespaces:                          # fan-out candidates
//!   - { name: apps, labels: { ecr-pull: enabled } }
//! allowedNamespaces: ["*"]             # fan-out: default = every candidate
//! failure: { kind: throttled, message: rate exceeded, attempt: 2 }
//! tokenExpiresInSeconds: 3600          # retry: optional
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::guard::{self, RetryClamp};
use super::host::sha256_hex;
use super::{
    AllowedNamespaces, CrInfo, Failure, HostConfig, Limits, LimitsOverride, NamespaceInfo,
    PluginHost, PluginSession, PolicyError, RetryDecision,
};

/// Arguments of `plugin test`.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginTestArgs {
    /// The plugin component (`.wasm`, built for wasm32-wasip2).
    pub wasm: PathBuf,
    /// The case to run: a YAML file with the resource, candidate namespaces
    /// and failure (see `plugins/examples/case.yaml`).
    #[arg(long)]
    pub case: PathBuf,
    /// A settings document (YAML or JSON file), instead of the case's
    /// `settingsByPlugin.<wasm file name>` or `settings`.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Refuse the plugin unless its sha256 is this (as the operator does).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Fuel per call (default 10,000,000).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Deadline per call, in milliseconds (default 100).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Memory limit, in bytes (default 16 MiB).
    #[arg(long)]
    pub memory_bytes: Option<usize>,
}

/// The case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    #[serde(default)]
    settings: Option<serde_json::Value>,
    /// Settings per plugin, keyed by the `.wasm` file name without extension
    /// (`naming_prefix`); taken before `settings`, so one case serves several plugins.
    #[serde(default)]
    settings_by_plugin: std::collections::BTreeMap<String, serde_json::Value>,
    cr: CaseCr,
    #[serde(default)]
    target_namespace: Option<String>,
    #[serde(default)]
    namespaces: Vec<NamespaceInfo>,
    #[serde(default)]
    allowed_namespaces: Option<Vec<String>>,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default)]
    token_expires_in_seconds: Option<u64>,
}

/// `CrInfo` with account and region optional (derived from the registry host).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseCr {
    name: String,
    namespace: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    registry: String,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    parameters: std::collections::BTreeMap<String, String>,
}

impl CaseCr {
    fn into_cr(self) -> CrInfo {
        // <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]
        let parts: Vec<&str> = self.registry.split('.').collect();
        let (acct, region) = match parts.as_slice() {
            [a, "dkr", ecr, r, ..] if ecr.starts_with("ecr") => ((*a).to_owned(), (*r).to_owned()),
            _ => (String::new(), String::new()),
        };
        CrInfo {
            name: self.name,
            namespace: self.namespace,
            labels: self.labels,
            annotations: self.annotations,
            account_id: self.account_id.unwrap_or(acct),
            region: self.region.unwrap_or(region),
            registry: self.registry,
            parameters: self.parameters,
        }
    }
}

/// The outcome of `plugin test`.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// What `plugin test` prints.
    pub text: String,
    /// Number of decisions that failed (error or rejected by a guardrail).
    pub failures: usize,
}

/// Runs `plugin test` and prints the report; fails if any decision failed.
pub fn run(args: PluginTestArgs) -> anyhow::Result<()> {
    let report = report(&args)?;
    print!("{}", report.text);
    anyhow::ensure!(
        report.failures == 0,
        "{} decision(s) failed",
        report.failures
    );
    Ok(())
}

/// Runs `plugin test` and returns the report instead of printing it.
pub fn report(args: &PluginTestArgs) -> anyhow::Result<TestReport> {
    let case_text = std::fs::read_to_string(&args.case)
        .with_context(|| format!("cannot read case {}", args.case.display()))?;
    let case: Case = serde_yaml::from_str(&case_text)
        .with_context(|| format!("invalid case {}", args.case.display()))?;
    let settings = match &args.settings {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read settings {}", p.display()))?;
            Some(
                serde_yaml::from_str::<serde_json::Value>(&t)
                    .with_context(|| format!("invalid settings {}", p.display()))?,
            )
        }
        None => {
            let stem = args
                .wasm
                .file_stem()
                .map(|s| s.to_string_lossy().replace('-', "_"))
                .unwrap_or_default();
            case.settings_by_plugin
                .get(&stem)
                .cloned()
                .or_else(|| case.settings.clone())
        }
    };
    let settings_json = match settings {
        None | Some(serde_json::Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    };
    let bytes = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read plugin {}", args.wasm.display()))?;
    let actual = sha256_hex(&bytes);
    let pin = args.sha256.clone().unwrap_or_else(|| actual.clone());
    let limits = LimitsOverride {
        fuel: args.fuel,
        timeout_ms: args.timeout_ms,
        memory_bytes: args.memory_bytes,
        ..Default::default()
    }
    .apply(Limits::default());
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })?;
    let name = args
        .wasm
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned());

    let mut out = String::new();
    let mut failures = 0;
    let _ = writeln!(out, "plugin:   {} (sha256 {actual})", args.wasm.display());
    let _ = writeln!(
        out,
        "limits:   fuel {} per call, timeout {:?}, memory {} bytes",
        limits.fuel, limits.timeout, limits.memory_bytes
    );
    let _ = writeln!(out, "settings: {settings_json}");
    let plugin = match host.load_bytes(&name, &bytes, &pin, settings_json, limits) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "load:     FAILED: {e}");
            return Ok(TestReport {
                text: out,
                failures: 1,
            });
        }
    };
    let hooks: Vec<&str> = plugin.hooks().iter().map(|h| h.as_str()).collect();
    let _ = writeln!(
        out,
        "load:     ok, settings accepted, exports [{}]",
        hooks.join(", ")
    );

    let cr = case.cr.into_cr();
    let mut line = |label: &str, s: &PluginSession<'_>, verdict: Result<String, String>| {
        let st = s.last_call();
        match verdict {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "{label}: {v}  (fuel {}, {:?})",
                    st.fuel_consumed, st.elapsed
                );
            }
            Err(e) => {
                failures += 1;
                let _ = writeln!(
                    out,
                    "{label}: FAILED {e}  (fuel {}, {:?})",
                    st.fuel_consumed, st.elapsed
                );
            }
        }
    };
    let err = |e: PolicyError| format!("[{}] {e}", e.reason());

    if plugin.has_hook(super::Hook::Naming) {
        let target = case
            .target_namespace
            .clone()
            .unwrap_or_else(|| cr.namespace.clone());
        let mut s = plugin.session();
        let verdict = s.secret_name(&cr, &target).map_err(err).and_then(|name| {
            guard::check_secret_name(&name)
                .map(|()| format!("secret name in {target:?} = {name:?}"))
                .map_err(|v| format!("[guardrail] answer rejected: {v}"))
        });
        line("naming", &s, verdict);
    }
    if plugin.has_hook(super::Hook::Fanout) {
        let allowed = match &case.allowed_namespaces {
            None => AllowedNamespaces::Any,
            Some(v) if v.iter().any(|n| n == "*") => AllowedNamespaces::Any,
            Some(v) => AllowedNamespaces::Only(v.iter().cloned().collect::<BTreeSet<_>>()),
        };
        let mut s = plugin.session();
        let verdict = s
            .select_namespaces(&cr, &case.namespaces)
            .map_err(err)
            .and_then(|chosen| {
                guard::check_fanout(
                    chosen,
                    case.namespaces.iter().map(|n| n.name.as_str()),
                    &|n| allowed.allows(n),
                )
                .map(|v| format!("{} of {} candidates: {v:?}", v.len(), case.namespaces.len()))
                .map_err(|v| format!("[guardrail] answer rejected: {v}"))
            });
        line("fanout", &s, verdict);
    }
    if plugin.has_hook(super::Hook::Retry) {
        match &case.failure {
            None => {
                let _ = writeln!(out, "retry:  skipped (the case has no `failure`)");
            }
            Some(f) => {
                let left = case.token_expires_in_seconds.map(Duration::from_secs);
                let mut s = plugin.session();
                let verdict = s.decide_retry(&cr, f, left).map_err(err).map(|d| {
                    match (RetryClamp::default().apply(d.clone(), left), d) {
                        (RetryDecision::RetryAfter(c), RetryDecision::RetryAfter(raw))
                            if c != raw =>
                        {
                            format!("retry after {c:?} (plugin said {raw:?}; clamped)")
                        }
                        (RetryDecision::RetryAfter(c), _) => format!("retry after {c:?}"),
                        (RetryDecision::GiveUp { reason }, _) => format!("give up: {reason}"),
                    }
                });
                line("retry", &s, verdict);
            }
        }
    }
    Ok(TestReport {
        text: out,
        failures,
    })
}
