//! OpenTelemetry span export over OTLP, configured by the standard `OTEL_*` variables.
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT` | where to send spans; **without either, nothing is exported** |
//! | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` (default) or `grpc` |
//! | `OTEL_SERVICE_NAME` | `service.name` (default `ecr-token-refresh`) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | more resource attributes (`k8s.pod.name=…,…`) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | sampling (default `parentbased_always_on`) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`, `OTEL_BSP_*` | headers, timeout, batching |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | export nothing |
//!
//! With `http/protobuf` the generic endpoint gets `/v1/traces` appended; the
//! traces-specific one is used as is. Spans are batched and sent from a background
//! thread; [`Tracing::shutdown`] sends what is left.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};

/// The `service.name` used when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES`
/// names one.
pub const DEFAULT_SERVICE_NAME: &str = "ecr-token-refresh";

/// The OTLP settings in the environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// An unsupported protocol.
    #[error("{var}={value:?}: unsupported OTLP protocol; use \"http/protobuf\" or \"grpc\"")]
    Protocol {
        /// The variable that set it.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The exporter could not be built (bad endpoint, timeout, headers…).
    #[error("cannot set up the OTLP span exporter for {endpoint}: {message}")]
    Build {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
}

/// The transport used to send spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
    /// OTLP/gRPC (`grpc`).
    Grpc,
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The endpoint spans go to, or `None` when export is off (no endpoint variable,
/// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`).
pub fn endpoint_from_env() -> Option<String> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
        return None;
    }
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`;
/// `http/protobuf` when neither is set.
///
/// # Errors
/// [`OtlpError::Protocol`] for any other value (`http/json` is not built in).
pub fn protocol_from_env() -> Result<OtlpProtocol, OtlpError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(var) {
            return match value.as_str() {
                "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
                "grpc" => Ok(OtlpProtocol::Grpc),
                _ => Err(OtlpError::Protocol { var, value }),
            };
        }
    }
    Ok(OtlpProtocol::HttpProtobuf)
}

/// The resource describing this process: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service.name` defaulting to
/// [`DEFAULT_SERVICE_NAME`] and `service.version` to this crate's version.
pub fn resource() -> Resource {
    let attributes = env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let names = |key: &str| {
        attributes
            .split(',')
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    };
    let mut builder = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() && !names("service.name") {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    if !names("service.version") {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    }
    builder.build()
}

/// A running span export pipeline.
pub struct Tracing {
    provider: SdkTracerProvider,
    endpoint: String,
    protocol: OtlpProtocol,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// Builds the exporter from the environment; `Ok(None)` when no endpoint is set.
    /// Must run inside a tokio runtime (the gRPC transport needs one).
    ///
    /// # Errors
    /// [`OtlpError`] when the variables are set but unusable.
    pub fn from_env() -> Result<Option<Self>, OtlpError> {
        let Some(endpoint) = endpoint_from_env() else {
            return Ok(None);
        };
        let protocol = protocol_from_env()?;
        let build_error = |e: opentelemetry_otlp::ExporterBuildError| OtlpError::Build {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        };
        let exporter = match protocol {
            OtlpProtocol::HttpProtobuf => SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()
                .map_err(build_error)?,
            OtlpProtocol::Grpc => SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(build_error)?,
        };
        // The sampler comes from OTEL_TRACES_SAMPLER(_ARG): the SDK's default config reads them.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        Ok(Some(Self {
            provider,
            endpoint,
            protocol,
        }))
    }

    /// The tracer the `tracing` layer reports to.
    pub fn tracer(&self) -> Tracer {
        self.provider.tracer("ecr-token-refresh")
    }

    /// The configured endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The transport.
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// Sends the spans still buffered and stops the exporter. Blocks (up to the export
    /// timeout): call it off the async workers.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!(
                "ecr-token-refresh: cannot flush traces to {}: {e}",
                self.endpoint
            );
        }
    }
}
