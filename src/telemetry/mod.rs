//! Logs and traces: a `tracing` subscriber writing text or JSON to stderr, and, when an
//! OTLP endpoint is configured, an OpenTelemetry layer exporting spans (see [`otel`]).
//!
//! Log lines written inside an exported span end with its trace ID (`trace_id=…` in text,
//! a `"trace_id"` member in JSON), so a log line leads to its trace.

pub mod otel;

use std::fmt;
use std::io::IsTerminal;

use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogConfig, TelemetryConfig};

/// Log output format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Directives that keep noisy dependencies (HTTP stacks, the AWS SDK, wasmtime and
/// cranelift) at `warn`; put before the configured level, so naming a target there wins.
pub const QUIET_DEPENDENCIES: &str = "hyper=warn,hyper_util=warn,h2=warn,rustls=warn,tower=warn,reqwest=warn,tonic=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn,aws_smithy_runtime=warn,aws_config=warn,cranelift_codegen=warn,wasmtime=warn";

/// The filter used when `RUST_LOG` is not set and the configured level is `info`.
pub const DEFAULT_FILTER: &str = "info,hyper=warn,hyper_util=warn,h2=warn,rustls=warn,tower=warn,aws_smithy_runtime=warn,aws_config=warn,cranelift_codegen=warn,wasmtime=warn";

/// Which spans are exported over OTLP: the operator's own (reconcile, ECR call, plugin
/// calls, Kubernetes writes, leader election), including its debug-level spans.
pub const EXPORT_FILTER: &str = "warn,ecr_token_refresh=debug";

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` (or `RUST_LOG`) is not a filter.
    #[error("log.level: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built from the `OTEL_*` variables.
    #[error(transparent)]
    Otlp(#[from] otel::OtlpError),
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps trace export alive; flushes and stops it on [`shutdown`](Self::shutdown) or drop.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    tracer: Option<otel::Tracing>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports the spans still buffered and stops the exporter (blocking work runs off the
    /// async workers).
    pub async fn shutdown(mut self) {
        if let Some(tracer) = self.tracer.take() {
            let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            tracer.shutdown();
        }
    }
}

/// The log filter: `RUST_LOG` when set, else the quiet-dependency directives followed by
/// `log.level`.
///
/// # Errors
/// [`TelemetryError::Filter`] when the directives do not parse.
pub fn log_filter(log: &LogConfig) -> Result<EnvFilter, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| TelemetryError::Filter(format!("RUST_LOG={v:?}: {e}"))),
        _ => EnvFilter::try_new(format!("{QUIET_DEPENDENCIES},{}", log.level))
            .map_err(|e| TelemetryError::Filter(format!("{:?}: {e}", log.level))),
    }?;
    Ok(filter)
}

/// Targets whose `trace` level logs HTTP bodies or response structs, which for
/// `GetAuthorizationToken` contain the token: capped at `debug` whatever the filter says.
pub const SECRET_BEARING_TARGETS: &[&str] = &[
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_smithy_json",
    "aws_sdk_ecr",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
];

/// Targets whose events, at any level, may quote a whole API answer: kube's client logs
/// an answer it could not decode (`warn!("{}, {:?}", text, e)`), and an answer to a Secret
/// read or write carries the Secret's data. Their events are never logged or exported.
/// (The operator asks for metadata-only answers to its Secret writes and decodes them
/// itself; this is the second line.)
pub const BODY_QUOTING_TARGETS: &[&str] = &["kube_client::client"];

fn under(target: &str, prefix: &str) -> bool {
    target == prefix
        || target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// Whether an event may be logged or exported at all: never `trace` from
/// [`SECRET_BEARING_TARGETS`], never anything from [`BODY_QUOTING_TARGETS`], whatever
/// `RUST_LOG` or `log.level` say. Spans are not affected (they carry no bodies).
pub fn is_loggable(meta: &tracing::Metadata<'_>) -> bool {
    if meta.is_span() {
        return true;
    }
    let target = meta.target();
    if BODY_QUOTING_TARGETS.iter().any(|t| under(target, t)) {
        return false;
    }
    *meta.level() != tracing::Level::TRACE
        || !SECRET_BEARING_TARGETS.iter().any(|t| under(target, t))
}

/// Installs the global subscriber: logs as configured, plus OTLP span export when
/// `telemetry.otlp` is on and an endpoint is set in the environment (see [`otel`]).
/// Must run inside a tokio runtime (the gRPC exporter needs one).
///
/// # Errors
/// [`TelemetryError`] for a bad filter, bad `OTEL_*` values, or a second installation.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(log)?.and(filter_fn(is_loggable));
    let tracer = if telemetry.otlp {
        otel::Tracing::from_env()?
    } else {
        None
    };
    let otel_layer = tracer.as_ref().map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer())
            .with_filter(EnvFilter::new(EXPORT_FILTER).and(filter_fn(is_loggable)))
    });
    let ansi = std::io::stderr().is_terminal();
    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .event_format(WithTraceId(
                tracing_subscriber::fmt::format().with_ansi(ansi),
            ))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_span_events(FmtSpan::NONE)
            .event_format(WithTraceId(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if let Some(t) = &tracer {
        tracing::info!(endpoint = %t.endpoint(), protocol = %t.protocol(), "exporting traces over OTLP");
    }
    Ok(Telemetry { tracer })
}

/// Wraps an event formatter: adds the OpenTelemetry trace ID of the current span, if it
/// has one.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some(trace_id) = current_trace_id(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_prefix('{') {
            Some(rest) => writeln!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writeln!(writer, "{line} trace_id={trace_id}"),
        }
    }
}

fn current_trace_id<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<TraceId>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let id = ctx.lookup_current()?.id();
    let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&id, d))?;
    let trace_id = cx.span().span_context().trace_id();
    (trace_id != TraceId::INVALID).then_some(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(filter: EnvFilter, target_is_hyper: bool, level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || match (target_is_hyper, level) {
            (true, Level::INFO) => tracing::enabled!(target: "hyper", Level::INFO),
            (true, _) => tracing::enabled!(target: "hyper", Level::WARN),
            (false, Level::DEBUG) => tracing::enabled!(target: "ecr_token_refresh", Level::DEBUG),
            (false, _) => tracing::enabled!(target: "ecr_token_refresh", Level::INFO),
        })
    }

    #[test]
    fn the_sdk_never_logs_at_trace_where_bodies_carry_the_token() {
        let filter = EnvFilter::new("trace").and(filter_fn(is_loggable));
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(filter);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            assert!(
                !tracing::enabled!(target: "aws_smithy_runtime::client::orchestrator", Level::TRACE)
            );
            assert!(!tracing::enabled!(target: "aws_sdk_ecr", Level::TRACE));
            assert!(tracing::enabled!(target: "aws_smithy_runtime", Level::DEBUG));
            assert!(tracing::enabled!(target: "ecr_token_refresh", Level::TRACE));
            assert!(
                tracing::enabled!(target: "aws_smithy_runtime_not_a_prefix_match", Level::TRACE)
            );
        });
    }

    #[test]
    fn kube_client_answers_are_never_logged_at_any_level() {
        let filter = EnvFilter::new("trace").and(filter_fn(is_loggable));
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(filter);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(target: "kube_client::client", Level::WARN));
            assert!(!tracing::enabled!(target: "kube_client::client", Level::ERROR));
            assert!(!tracing::enabled!(target: "kube_client::client::builder", Level::DEBUG));
            assert!(tracing::enabled!(target: "kube_client::clientele", Level::WARN));
            assert!(tracing::enabled!(target: "kube_runtime::watcher", Level::DEBUG));
        });
    }

    #[test]
    fn dependencies_stay_quiet_unless_the_level_names_them() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // RUST_LOG replaces the configured level by design.
        }
        let plain = LogConfig::default();
        assert!(enabled(log_filter(&plain).unwrap(), false, Level::INFO));
        assert!(!enabled(log_filter(&plain).unwrap(), false, Level::DEBUG));
        assert!(!enabled(log_filter(&plain).unwrap(), true, Level::INFO));
        assert!(enabled(log_filter(&plain).unwrap(), true, Level::WARN));

        let named = LogConfig {
            level: "debug,hyper=info".into(),
            ..LogConfig::default()
        };
        assert!(enabled(log_filter(&named).unwrap(), false, Level::DEBUG));
        assert!(enabled(log_filter(&named).unwrap(), true, Level::INFO));

        let bad = LogConfig {
            level: "info,[".into(),
            ..LogConfig::default()
        };
        assert!(log_filter(&bad).is_err());
    }
}
