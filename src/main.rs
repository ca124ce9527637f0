//! The `ecr-token-refresh` command line: a thin layer over the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ecr_token_refresh::api::parse_go_duration;
use ecr_token_refresh::controller::{self, ScheduleSettings, Settings};
use ecr_token_refresh::ecr::AwsTokenSource;
use ecr_token_refresh::policy::{BuiltinRetry, HostConfig, PluginRegistry, Policies, testcmd};
use ecr_token_refresh::telemetry::{self, LogFormat};

/// Kubernetes operator that keeps Amazon ECR image-pull Secrets fresh.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller. Finds the cluster like kubectl (KUBECONFIG, then in-cluster)
    /// and AWS credentials with the SDK's default chain (AWS_* variables, profile, IRSA,
    /// EKS Pod Identity, IMDS).
    Run(RunArgs),
    /// Print the CustomResourceDefinition YAML generated from the Rust types.
    Crd,
    /// Policy plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin's hooks on a case (resource, candidate namespaces, failure) written in
    /// YAML, with the operator's limits, and print each decision with the fuel and time
    /// it took. See plugins/examples/case.yaml.
    Test(testcmd::PluginTestArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ECR_TOKEN_REFRESH_NAMESPACE")]
    namespace: Option<String>,
    /// Refresh at least this long before a token expires (Go duration).
    #[arg(long, default_value = "30m", value_parser = duration)]
    refresh_margin: Duration,
    /// Never refresh one resource more often than this (Go duration).
    #[arg(long, default_value = "60s", value_parser = duration)]
    min_refresh_interval: Duration,
    /// Bound of the first retry delay after a failure (Go duration); doubles per attempt,
    /// with full jitter.
    #[arg(long, default_value = "1s", value_parser = duration)]
    backoff_base: Duration,
    /// Longest retry delay (Go duration); retries continue at this pace.
    #[arg(long, default_value = "5m", value_parser = duration)]
    backoff_max: Duration,
    /// Policy plugins registered by the cluster owner (YAML; see config/plugins.yaml).
    /// Resources select among them by name in `spec.policy`.
    #[arg(long, env = "ECR_TOKEN_REFRESH_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Resources reconciled at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "ECR_TOKEN_REFRESH_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", ecr_token_refresh::crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Plugin(PluginCommand::Test(args)) => testcmd::run(args),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let registry = match &args.plugins {
        Some(path) => PluginRegistry::load_file(path)?,
        None => PluginRegistry::default(),
    };
    let retry = BuiltinRetry {
        base: args.backoff_base,
        cap: args.backoff_max,
        ..BuiltinRetry::default()
    };
    // Compiling plugins blocks: keep it off the async workers.
    let policies = tokio::task::spawn_blocking(move || {
        Policies::load(&registry, HostConfig::default()).with_builtin_retry(retry)
    })
    .await?;
    let settings = Settings {
        namespace: args.namespace,
        schedule: ScheduleSettings {
            refresh_margin: args.refresh_margin,
            min_refresh_interval: args.min_refresh_interval,
        },
        concurrency: args.concurrency,
        ..Settings::default()
    };
    let client = kube::Client::try_default()
        .await
        .context("cannot find a Kubernetes cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let tokens = Arc::new(AwsTokenSource::from_env().await);
    controller::run(
        client,
        tokens,
        Arc::new(policies),
        settings,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}
