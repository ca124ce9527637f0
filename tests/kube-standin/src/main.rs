//! `kube-standin` binary: serves a stand-in Kubernetes API over HTTP for demos.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube_standin::StandIn;
use serde::Deserialize;
use serde_json::Value;

/// A small stateful stand-in for the Kubernetes API server (plain HTTP, no auth).
#[derive(Parser, Debug)]
#[command(name = "kube-standin", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the server (context `kube-standin`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Multi-document YAML files whose objects are created at start (in order).
    #[arg(long = "apply", value_name = "FILE")]
    apply: Vec<PathBuf>,
    /// Watch events kept for resuming watches.
    #[arg(long, default_value_t = kube_standin::DEFAULT_EVENT_RETENTION)]
    event_retention: usize,
    /// Log every request to stderr.
    #[arg(long, short)]
    verbose: bool,
}

fn load_file(standin: &StandIn, path: &PathBuf) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut n = 0;
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc)
            .with_context(|| format!("{}: document {}", path.display(), i + 1))?;
        if value.is_null() {
            continue;
        }
        let items = match value.get("kind").and_then(Value::as_str) {
            Some(k) if k.ends_with("List") && value.get("items").is_some() => {
                value["items"].as_array().cloned().unwrap_or_default()
            }
            _ => vec![value],
        };
        for item in items {
            standin
                .create_manifest(item)
                .with_context(|| format!("{}: document {}", path.display(), i + 1))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when the future is first polled), so that a signal sent right
/// after the readiness line is not lost to the default action.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing a SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing a SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let signal = shutdown_signal()?;
    let standin = StandIn::new()
        .with_event_retention(args.event_retention)
        .with_request_log(args.verbose);
    let server = standin
        .serve(args.listen)
        .await
        .context("binding the listen address")?;
    for file in &args.apply {
        let n = load_file(&standin, file)?;
        eprintln!(
            "kube-standin: created {n} object(s) from {}",
            file.display()
        );
    }
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, server.kubeconfig_yaml())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "kube-standin listening on {}", server.url)?;
        out.flush()?;
    }
    signal.await;
    eprintln!("kube-standin: shutting down");
    server.shutdown().await;
    Ok(())
}
