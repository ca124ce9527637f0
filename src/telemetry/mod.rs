//! Logging setup: a `tracing` subscriber writing text or JSON to stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter used when `RUST_LOG` is not set: `info` for the operator, quieter for the
/// noisy dependencies (HTTP stacks, the AWS SDK, wasmtime and cranelift).
pub const DEFAULT_FILTER: &str = "info,hyper=warn,hyper_util=warn,h2=warn,rustls=warn,tower=warn,aws_smithy_runtime=warn,aws_config=warn,cranelift_codegen=warn,wasmtime=warn";

/// Installs the global subscriber. `RUST_LOG` overrides [`DEFAULT_FILTER`].
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
