//! The `ecr-token-refresh` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ecr_token_refresh::config::{self, CliOverrides, OperatorConfig};
use ecr_token_refresh::controller::WriteClient;
use ecr_token_refresh::ecr::AwsTokenSource;
use ecr_token_refresh::metrics::Metrics;
use ecr_token_refresh::operator::{self, Handles};
use ecr_token_refresh::policy::{listcmd, testcmd};
use ecr_token_refresh::render;
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
    Run(ConfigArgs),
    /// Reconcile every resource once (same config, policies, credentials, writes and
    /// status as `run`), print one line per resource (`namespace/name  Ready|NotReady|...
    /// detail`) on stdout, and exit: 0 when every resource ended Ready, 1 otherwise.
    /// For running the operator as a CronJob (config/cronjob). With leader election
    /// configured, it takes the controller's Lease for the pass and refuses to run while a
    /// controller holds it.
    Once(OnceArgs),
    /// Print the effective configuration (defaults, config file, environment, flags),
    /// each value with where it came from; secret-looking values are redacted.
    Config(ConfigArgs),
    /// Print the CustomResourceDefinition YAML generated from the Rust types.
    Crd,
    /// Policy plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print what the operator would write for resource files, offline (no cluster, no
    /// AWS): each Secret (the password a placeholder), the target namespaces with each
    /// policy decision, the ServiceAccount changes; or the errors, naming file, resource and
    /// field (exit status 1).
    Render(RenderCommand),
    /// Internal: compile a policy plugin component read from stdin and write the compiled
    /// artifact to stdout. The operator runs itself with it to keep the compiler out of
    /// its own process (see `policy::compiler`).
    #[command(name = "compile-plugin", hide = true)]
    CompilePlugin {
        /// Largest component accepted, in bytes (the operator's `policy.max_component_bytes`).
        #[arg(long, value_name = "BYTES")]
        max_bytes: u64,
        /// Most memory this process may use, in bytes (`RLIMIT_DATA`; the operator's
        /// `policy.compile_memory_bytes`). Unset: no limit of its own.
        #[arg(long, value_name = "BYTES")]
        max_memory: Option<u64>,
    },
}

#[derive(clap::Args)]
struct RenderCommand {
    #[command(flatten)]
    render: render::RenderArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin's hooks on a case (resource, candidate namespaces, failure) written in
    /// YAML, with the operator's limits, and print each decision with the fuel and time
    /// it took. See plugins/examples/case.yaml.
    Test(testcmd::PluginTestArgs),
    /// List the registered plugins (policy.plugins of the config file and the files of
    /// policy.directory), loading each as the operator would: its source, sha256, the
    /// hooks it exports and its load state (loaded, or failed and why). Exit status 1
    /// when one failed.
    List(ConfigArgs),
}

/// Where the configuration comes from.
#[derive(clap::Args)]
struct ConfigArgs {
    /// Config file (YAML or TOML). Default: the file named by ECR_TOKEN_REFRESH_CONFIG,
    /// else none. Every key can also be set as ECR_TOKEN_REFRESH_<SECTION>__<KEY>.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format; overrides `log.format` from the file and the environment.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// `once`: the config, and when the next pass comes.
#[derive(clap::Args)]
struct OnceArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Time until the next pass (the CronJob's period), as a Go duration (`6h`, `90m`):
    /// every refresh due before then is done now, so no token expires between passes.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_duration)]
    next_run_in: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    ecr_token_refresh::api::parse_go_duration(s).map_err(|e| e.to_string())
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<config::LoadedConfig> {
        let cli = CliOverrides {
            log_format: self.log_format,
        };
        Ok(config::load(self.config.as_deref(), &cli)?)
    }
}

fn main() -> anyhow::Result<ExitCode> {
    // Before the runtime starts its threads (they keep the arena they first use).
    ecr_token_refresh::heap::use_one_arena();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(command(Cli::parse()))
}

/// Runs the subcommand of `cli`.
async fn command(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!("{}", ecr_token_refresh::crd::crd_yaml()?);
        }
        Command::Config(args) => {
            print!("{}", args.load()?.explain());
        }
        Command::Run(args) => {
            compile_plugins_in_child_process();
            run(args.load()?.config).await?
        }
        Command::Once(args) => {
            compile_plugins_in_child_process();
            return once(args.config.load()?.config, args.next_run_in).await;
        }
        Command::CompilePlugin {
            max_bytes,
            max_memory,
        } => {
            if let Some(limit) = max_memory
                && let Err(e) = ecr_token_refresh::policy::compiler::limit_memory(limit)
            {
                eprintln!("cannot limit the compiler's memory to {limit} bytes: {e}");
                return Ok(ExitCode::FAILURE);
            }
            let result = ecr_token_refresh::policy::compile_plugin(
                std::io::stdin().lock(),
                std::io::stdout().lock(),
                max_bytes,
            );
            if let Err(e) = result {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        }
        // Plugin output goes through WASI streams that block on their own runtime: run
        // the plugin on a blocking thread, never inside this async one.
        Command::Plugin(PluginCommand::Test(args)) => {
            tokio::task::spawn_blocking(move || testcmd::run(args)).await??
        }
        Command::Plugin(PluginCommand::List(args)) => {
            let registry = args.load()?.config.policy;
            let table = tokio::task::spawn_blocking(move || listcmd::list(&registry)).await??;
            print!("{}", listcmd::render(&table));
            if !listcmd::all_loaded(&table) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Render(cmd) => return render_files(cmd).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The operator compiles policy plugins by running this executable again (`compile-plugin`),
/// so that the compiler's code and memory never stay in the long-running process.
fn compile_plugins_in_child_process() {
    if let Some(program) = ecr_token_refresh::policy::compiler::this_executable() {
        ecr_token_refresh::policy::compiler::compile_in_child_process(program);
    }
}

/// `render`: prints to stdout; errors to stderr, and then exit status 1.
async fn render_files(cmd: RenderCommand) -> anyhow::Result<ExitCode> {
    let config = cmd.config.load()?.config;
    let args = cmd.render;
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for path in &args.files {
        let text = render::read(path)?;
        let (found, bad) =
            render::parse_resources(&path.display().to_string(), &text, &args.namespace);
        resources.extend(found);
        errors.extend(bad);
    }
    let state = match &args.cluster_state {
        Some(path) => Some(
            render::ClusterState::parse(&render::read(path)?)
                .map_err(|e| anyhow::anyhow!("--cluster-state {}: {e}", path.display()))?,
        ),
        None => None,
    };
    // Compiling plugins blocks: off the async workers.
    let for_policies = config.clone();
    let policies = tokio::task::spawn_blocking(move || for_policies.policies()).await??;
    let mut out = String::new();
    errors.extend(render::render(&resources, &config, &policies, state.as_ref(), &mut out).await);
    print!("{out}");
    if errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error(s); {} resource(s) read",
        errors.len(),
        resources.len()
    );
    Ok(ExitCode::FAILURE)
}

async fn run(config: OperatorConfig) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&config.log, &config.telemetry)?;
    let result = serve(config).await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "stopped");
    }
    telemetry.shutdown().await;
    result
}

/// `once`: one pass, the summary on stdout (logs go to stderr), exit 0 when every
/// resource ended Ready.
async fn once(config: OperatorConfig, next_run_in: Duration) -> anyhow::Result<ExitCode> {
    let telemetry = telemetry::init(&config.log, &config.telemetry)?;
    let result = async {
        let client = cluster().await?;
        let metrics = Arc::new(Metrics::default());
        let tokens = token_source(&client, &metrics).await;
        anyhow::Ok(
            ecr_token_refresh::once::run(&config, client, tokens, metrics, next_run_in).await?,
        )
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "the pass did not run");
    }
    telemetry.shutdown().await;
    let summary = result?;
    print!("{summary}");
    Ok(if summary.all_ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The Kubernetes client, found like kubectl does, and the client for Secret writes (the
/// same cluster, without kube's automatic retry: Secret writes handle 429 themselves, with
/// `Retry-After` and a shared AIMD window).
async fn clusters() -> anyhow::Result<(kube::Client, WriteClient)> {
    let config = kube::Config::infer()
        .await
        .context("cannot find a Kubernetes cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let client =
        kube::Client::try_from(config.clone()).context("cannot build a Kubernetes client")?;
    let writer = WriteClient::without_retry(&config).context("cannot build a Kubernetes client")?;
    Ok((client, writer))
}

/// The Kubernetes client, found like kubectl does.
async fn cluster() -> anyhow::Result<kube::Client> {
    Ok(clusters().await?.0)
}

/// ECR tokens through the SDK's default credential chain; ServiceAccount tokens for web
/// identity (spec.auth.serviceAccountRef) come through the operator's own Kubernetes
/// client; STS calls are counted in `metrics`.
async fn token_source(client: &kube::Client, metrics: &Arc<Metrics>) -> Arc<AwsTokenSource> {
    Arc::new(
        AwsTokenSource::from_env()
            .await
            .with_kube_client(client.clone())
            .with_metrics(Arc::clone(metrics)),
    )
}

async fn serve(config: OperatorConfig) -> anyhow::Result<()> {
    let (client, writer) = clusters().await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr().unwrap_or(config.server.listen);
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    let mut handles = Handles::new(&config);
    handles.writer = Some(writer);
    let tokens = token_source(&client, &handles.metrics).await;
    operator::run(config, client, tokens, listener, handles, shutdown_signal()).await?;
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
    tokio::spawn(shutdown_watchdog());
}

/// After the first signal: a second SIGTERM/SIGINT, or a graceful stop that takes longer
/// than [`GRACEFUL_STOP`], ends the process at once.
async fn shutdown_watchdog() {
    let second = async {
        #[cfg(unix)]
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::select! {
        _ = second => {
            tracing::warn!("second shutdown signal: exiting now");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(GRACEFUL_STOP) => {
            tracing::error!(after = ?GRACEFUL_STOP, "graceful shutdown did not finish; exiting");
            std::process::exit(1);
        }
    }
}

/// How long a graceful stop may take (Kubernetes' default grace period is 30 s).
const GRACEFUL_STOP: std::time::Duration = std::time::Duration::from_secs(25);
