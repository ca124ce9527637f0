//! Fan-out at scale: the real operator binary against the Kubernetes stand-in with 1 ms of
//! injected latency per API request, moto for ECR, and the example label plugin.
//!
//! For 100, 1,000, 2,000 and 5,000 labelled namespaces, with the default write concurrency
//! (16) and with 1 (a serial writer, the original operator's way), it reports: time from
//! resource creation to every Secret written; the same N Secrets server-side-applied by a
//! bare `kube::Client` with the same concurrency against the same stand-in (the raw writer:
//! no operator logic) and the ratio of the two (the overhead this project owns); reconciles;
//! API requests and writes of a no-op resync; ECR calls (from the operator's /metrics); the
//! operator's RSS by phase (ready, fan-out plugin loaded, after the fan-out, idle) and peak
//! (VmHWM); stderr splits each phase's RSS into anonymous memory and file pages.
//!
//! Run: `cargo bench --bench fanout` (needs the `.venv` with moto and the wasm32-wasip2
//! target, as the tests do). `FANOUT_SIZES=100,1000` picks sizes; `FANOUT_OPERATOR=path`
//! runs another build of the operator (e.g. an earlier commit's) under the same harness;
//! `FANOUT_RUNS=3` reports medians of three runs per case; `FANOUT_SERIAL=0` skips the
//! serial cases; `FANOUT_COMPILE_CACHE=dir` gives the operator that compiled-plugin cache
//! directory (`scripts/symbol-order.sh` runs the operator under valgrind this way).

#[allow(dead_code)]
#[path = "../tests/common/moto.rs"]
mod moto;
#[path = "../tests/common/plugins.rs"]
mod plugins;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_standin::StandIn;
use serde_json::json;

const CRS: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes";
const SECRETS: &str = "v1/secrets";
const NAMESPACES: &str = "v1/namespaces";

struct Row {
    namespaces: usize,
    concurrency: usize,
    to_all_written: Duration,
    raw_writer: Duration,
    reconciles: u64,
    resync_requests: u64,
    resync_writes: u64,
    ecr_calls: u64,
    ready_rss_kib: u64,
    loaded_rss_kib: u64,
    fanned_out_rss_kib: u64,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A field of /proc/PID/status in KiB: `VmHWM` (peak) or `VmRSS` (now).
fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The raw writer: a bare `kube::Client` server-side-applies a `kubernetes.io/dockerconfigjson`
/// Secret `pull` into each of `namespaces`, `concurrency` at a time, against `api` (the
/// stand-in with the same injected latency). Returns the time for all of them.
async fn raw_writer(
    kubeconfig: &std::path::Path,
    namespaces: &[String],
    concurrency: usize,
) -> Duration {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams};
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let doc = br#"{"auths":{"123456789012.dkr.ecr.us-east-1.amazonaws.com":{"username":"AWS","password":"raw","auth":"QVdTOnJhdw=="}}}"#;
    let started = Instant::now();
    let writes = namespaces.iter().map(|ns| {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        async move {
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "pull", "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "raw-writer"}},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, doc)},
            });
            api.patch("pull", &PatchParams::apply("raw-writer").force(), &Patch::Apply(&secret))
                .await
                .unwrap();
        }
    });
    futures::stream::iter(writes)
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}

/// One line of the operator's memory at `phase` on stderr: RSS split into anonymous
/// memory (heap, stacks) and file pages (the mapped binary), so a regression shows where.
fn log_memory(pid: u32, n: usize, phase: &str) {
    let mib = |field| rss_kib(pid, field) as f64 / 1024.0;
    eprintln!(
        "memory: {n} namespaces, {phase}: RSS {:.1} MiB = anonymous {:.1} + file {:.1}",
        mib("VmRSS:"),
        mib("RssAnon:"),
        mib("RssFile:")
    );
}

async fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The operator's /metrics text (empty when it cannot be read).
fn scrape(port: u16) -> String {
    Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// The sum of every sample of the metric family `family` on the operator's /metrics.
fn scrape_sum(port: u16, family: &str) -> u64 {
    scrape(port)
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

/// The operator under test, stopped if the case panics (a timeout, a failed assertion):
/// otherwise it would outlive the bench and keep running into the next measurements.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run_case(moto: &moto::Moto, n: usize, concurrency: usize) -> Row {
    let api = StandIn::new().with_bookmark_interval(Duration::from_secs(1));
    let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_yaml()).unwrap();
    let ns = |name: String, labelled: bool| {
        let labels = if labelled {
            json!({"ecr-pull": "enabled"})
        } else {
            json!({})
        };
        api.create(NAMESPACES, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}))
            .unwrap();
    };
    ns("platform".into(), false);
    for i in 0..n {
        ns(format!("team-{i:05}"), true);
    }
    for i in 0..n / 10 {
        ns(format!("other-{i:05}"), false);
    }
    let wasm = plugins::wasm("fanout-label");
    let metrics_port = free_port();
    let config = format!(
        "server:\n  listen: 127.0.0.1:{metrics_port}\ncontroller:\n  write_concurrency: {concurrency}\n\
         fanout:\n  allowed_source_namespaces: [platform]\n\
         policy:\n{}  plugins:\n    labelled:\n      path: {}\n      sha256: {}\n      settings: {{label: ecr-pull, value: enabled}}\n",
        std::env::var("FANOUT_COMPILE_CACHE")
            .map(|dir| format!("  cache_directory: {dir}\n"))
            .unwrap_or_default(),
        wasm.display(),
        plugins::sha256_of(&wasm)
    );
    std::fs::write(dir.path().join("operator.yaml"), config).unwrap();
    api.faults().set_latency(Duration::from_millis(1));

    let operator = std::env::var_os("FANOUT_OPERATOR")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ecr-token-refresh").into());
    let mut child = Operator(
        Command::new(operator)
            .args(["run", "--config"])
            .arg(dir.path().join("operator.yaml"))
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env("AWS_ENDPOINT_URL_ECR", moto.url())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ready once the caches are synced.
    wait("the operator's /readyz", Duration::from_secs(60), || {
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/readyz")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .await;

    let ready_rss_kib = rss_kib(child.0.id(), "VmRSS:");
    log_memory(child.0.id(), n, "ready");
    // Readiness never waits for plugins (they compile in the background): wait for the
    // fan-out plugin too, so the fan-out is timed from a loaded plugin, not its compile.
    // (The gauge has a sample, 0 while compiling, from start-up on. An earlier build
    // without one, e.g. the "before" of issue 12 under FANOUT_OPERATOR, loaded its plugins
    // before it became ready.)
    let loaded = "ecr_token_refresh_plugin_loaded{";
    if scrape(metrics_port).contains(loaded) {
        wait(
            "the fan-out plugin to load",
            Duration::from_secs(120),
            || scrape_sum(metrics_port, "ecr_token_refresh_plugin_loaded") >= 1,
        )
        .await;
    }
    let loaded_rss_kib = rss_kib(child.0.id(), "VmRSS:");
    log_memory(child.0.id(), n, "plugin loaded");
    let started = Instant::now();
    api.create(
        CRS,
        json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
               "metadata": {"name": "pull", "namespace": "platform"},
               "spec": {"ecrRegistry": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "frequency": "8h",
                        "region": "us-east-1", "policy": {"fanout": "labelled"}}}),
    )
    .unwrap();
    // Counted in place (a list would clone every Secret under the store's lock, each poll,
    // and slow the very server being measured).
    // The operator's copies are the only Secrets here: their number is known without
    // visiting them, so it is checked after every change the stand-in makes (no polling
    // interval in the measured time, and nothing that slows the server being measured).
    let all_written = api
        .wait_for(Duration::from_secs(600), |api| api.len(SECRETS) >= n)
        .await;
    let to_all_written = started.elapsed();
    assert!(all_written, "timed out waiting for every Secret");
    let count = || api.count(SECRETS, None, |s| s["metadata"]["name"] == "pull");
    let fanned_out_rss_kib = rss_kib(child.0.id(), "VmRSS:");
    log_memory(child.0.id(), n, "fanned out");
    assert_eq!(count(), n, "only the labelled namespaces");
    wait("status", Duration::from_secs(60), || {
        api.get(CRS, Some("platform"), "pull").unwrap()["status"]["servedNamespaces"] == n
    })
    .await;
    // Let the tail of the first reconcile finish, then resync with nothing to do.
    let mut last = api.counters().total();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = api.counters().total();
        if now == last {
            break;
        }
        last = now;
    }
    api.reset_counters();
    api.merge_patch(
        CRS,
        Some("platform"),
        "pull",
        json!({"metadata": {"annotations": {"resync": "1"}}}),
        false,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = api.counters();
    let idle_rss_kib = rss_kib(child.0.id(), "VmRSS:");
    log_memory(child.0.id(), n, "idle");
    let reconciles = scrape_sum(metrics_port, "ecr_token_refresh_reconciles_total");
    let ecr_calls = scrape_sum(metrics_port, "ecr_token_refresh_ecr_requests_total");
    let peak_rss_kib = rss_kib(child.0.id(), "VmHWM:");
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = child.0.wait();

    // The raw writer, on the same stand-in (same latency), into fresh Secrets of its own.
    let targets: Vec<String> = (0..n).map(|i| format!("team-{i:05}")).collect();
    for ns in &targets {
        let _ = api.delete(SECRETS, Some(ns), "pull");
    }
    let raw_writer = raw_writer(&dir.path().join("kubeconfig"), &targets, concurrency).await;
    server.shutdown().await;
    Row {
        namespaces: n,
        concurrency,
        to_all_written,
        raw_writer,
        reconciles,
        resync_requests: counts.total(),
        resync_writes: counts.writes(),
        ecr_calls,
        ready_rss_kib,
        loaded_rss_kib,
        fanned_out_rss_kib,
        idle_rss_kib,
        peak_rss_kib,
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    let sizes: Vec<usize> = std::env::var("FANOUT_SIZES")
        .unwrap_or_else(|_| "100,1000,2000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let moto = moto::Moto::start();
    // moto builds its ECR backend on the first call (about 160 ms): pay that here, not in
    // the first case's fan-out.
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-XPOST", &moto.url()])
        .args(["-H", "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"])
        .args(["-H", "Content-Type: application/x-amz-json-1.1"])
        .args(["-H", "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=0"])
        .args(["-d", r#"{"registryIds":["123456789012"]}"#])
        .status();
    let runs_per_case: usize = std::env::var("FANOUT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut rows = Vec::new();
    for &n in &sizes {
        // FANOUT_SERIAL=0 skips the serial runs (quicker while iterating; no "vs serial").
        let serial = std::env::var("FANOUT_SERIAL").map_or(true, |v| v != "0");
        for &concurrency in if serial { &[16, 1][..] } else { &[16][..] } {
            // FANOUT_RUNS=3 runs each case three times: the operator's and the raw writer's
            // times are the medians; the other columns come from the run with the median
            // operator time.
            let mut runs = Vec::new();
            for _ in 0..runs_per_case {
                let row = run_case(&moto, n, concurrency).await;
                eprintln!(
                    "done: {n} namespaces, concurrency {concurrency}: {:?} (raw writer {:?})",
                    row.to_all_written, row.raw_writer
                );
                runs.push(row);
            }
            let mut raw: Vec<Duration> = runs.iter().map(|r| r.raw_writer).collect();
            raw.sort();
            runs.sort_by_key(|r| r.to_all_written);
            let mut row = runs.swap_remove(runs.len() / 2);
            row.raw_writer = raw[raw.len() / 2];
            rows.push(row);
        }
    }
    println!(
        "| namespaces | write concurrency | operator: CR → all Secrets | raw writer | ratio to raw | vs serial operator | reconciles | no-op resync: requests / writes | ECR calls | RSS ready / plugin loaded / fanned out / idle | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    for row in &rows {
        let serial = rows
            .iter()
            .find(|r| r.namespaces == row.namespaces && r.concurrency == 1)
            .map_or_else(
                // No serial run of this size (FANOUT_SERIAL=0).
                || "—".to_owned(),
                |r| {
                    let times = r.to_all_written.as_secs_f64() / row.to_all_written.as_secs_f64();
                    format!("{times:.1}× faster")
                },
            );
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {:.2} | {} | {} | {} / {} | {} | {:.1} / {:.1} / {:.1} / {:.1} MiB | {:.1} MiB |",
            row.namespaces,
            row.concurrency,
            row.to_all_written.as_secs_f64(),
            row.raw_writer.as_secs_f64(),
            row.to_all_written.as_secs_f64() / row.raw_writer.as_secs_f64(),
            serial,
            row.reconciles,
            row.resync_requests,
            row.resync_writes,
            row.ecr_calls,
            mib(row.ready_rss_kib),
            mib(row.loaded_rss_kib),
            mib(row.fanned_out_rss_kib),
            mib(row.idle_rss_kib),
            mib(row.peak_rss_kib)
        );
    }
}
