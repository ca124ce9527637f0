//! The real binary's configuration, traces, metrics and logs: `ecr-token-refresh config`
//! with a file and an environment override, and `ecr-token-refresh run --config
//! config/operator.yaml` exporting spans over OTLP/gRPC, serving `/metrics`, and logging
//! JSON lines that carry the trace ID.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::moto::Moto;
use common::otlp::OtlpReceiver;
use common::web::{get, poll_async, sample};
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-refresh");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/operator.yaml");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("config").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("ECR_TOKEN_REFRESH_CONFIG").output().unwrap()
}

#[test]
fn config_shows_each_value_with_its_source() {
    let out = config_command(
        &["--config", EXAMPLE],
        &[("ECR_TOKEN_REFRESH_REFRESH__MARGIN", "45m")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        line("margin"),
        "margin: 45m  # environment variable ECR_TOKEN_REFRESH_REFRESH__MARGIN"
    );
    assert_eq!(
        line("backoff_base"),
        format!("backoff_base: 1s  # file {EXAMPLE}")
    );
    assert_eq!(line("identity"), "identity: null  # default");

    let out = config_command(&["--config", EXAMPLE, "--log-format", "json"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("format: json  # command line (--log-format)"),
        "{text}"
    );
}

#[test]
fn config_refuses_an_unknown_key_and_a_bad_value_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("operator.yaml");
    std::fs::write(&file, "leader_election:\n  lease_duraton: 15s\n").unwrap();
    let out = config_command(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("leader_election.lease_duraton: unknown key"),
        "{err}"
    );
    assert!(err.contains(file.to_str().unwrap()), "{err}");

    let out = config_command(
        &["--config", EXAMPLE],
        &[("ECR_TOKEN_REFRESH_SERVER__LISTEN", "everywhere")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen:"), "{err}");
    assert!(err.contains("ECR_TOKEN_REFRESH_SERVER__LISTEN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exports_a_trace_over_grpc_serves_metrics_and_logs_the_trace_id() {
    let receiver = OtlpReceiver::start().await;
    let moto = Moto::start();
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server.kubeconfig_yaml()).unwrap();
    let log_path = dir.path().join("operator.log");
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    cluster.apply_sample("ecr-credentials", json!({}));
    let mut child = moto
        .operator_env(
            Command::new(BIN).args(["run", "--config", EXAMPLE, "--log-format", "json"]),
            &kubeconfig,
        )
        .env("ECR_TOKEN_REFRESH_SERVER__LISTEN", addr.to_string())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let ready = poll_async(WAIT, || async { get(addr, "/readyz").await.0 == 200 }).await;
    assert!(ready, "/readyz: {:?}", get(addr, "/readyz").await);
    let gauge =
        r#"ecr_token_refresh_token_expires_in_seconds{namespace="default",name="ecr-credentials"}"#;
    let counted = poll_async(WAIT, || async {
        sample(
            &get(addr, "/metrics").await.1,
            r#"ecr_token_refresh_reconciles_total{outcome="refreshed"}"#,
        )
        .is_some()
    })
    .await;
    let page = get(addr, "/metrics").await.1;
    assert!(counted, "{page}");
    let left = sample(&page, gauge).unwrap_or_else(|| panic!("no expiry gauge in\n{page}"));
    let expires_at: jiff::Timestamp = cluster.cr("ecr-credentials")["status"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = expires_at
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64();
    assert!(
        (left - expected).abs() < 5.0,
        "gauge {left}, expiresAt - now {expected}"
    );

    // SIGTERM: a clean stop that flushes the batched spans (the batch delay is 10 min).
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped = poll_until(Duration::from_secs(15), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(stopped, "the operator did not stop within 15 s of SIGTERM");
    assert!(child.wait().unwrap().success());

    let got = receiver
        .wait_for(WAIT, |spans| spans.iter().any(|s| s.name == "reconcile"))
        .await;
    let spans = receiver.spans();
    assert!(
        got,
        "no reconcile span arrived over gRPC: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let reconcile = spans
        .iter()
        .find(|s| {
            s.name == "reconcile"
                && s.attributes
                    .get("outcome")
                    .is_some_and(|o| o == "refreshed")
        })
        .expect("a refreshing reconcile span");
    assert_eq!(reconcile.transport, "grpc");
    assert_eq!(reconcile.resource["service.name"], "ecr-token-refresh");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "ecr.get_authorization_token"
                && s.parent_span_id == reconcile.span_id)
    );

    // The log line written inside that reconcile carries its trace ID.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let written: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "secrets written")
        .collect();
    assert!(
        written
            .iter()
            .any(|v| v["trace_id"] == reconcile.trace_id.as_str()),
        "no 'secrets written' line with trace_id {}:\n{log}",
        reconcile.trace_id
    );
    assert!(log.contains("exporting traces over OTLP"), "{log}");
    assert!(
        !log.contains("auth-token"),
        "the token leaked into the log:\n{log}"
    );
}
