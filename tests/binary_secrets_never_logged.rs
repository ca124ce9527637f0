//! No Secret body in any log or span: the real binary, logging everything (`RUST_LOG=trace`)
//! and exporting spans over OTLP, while the API server garbles every answer to a Secret
//! write (the write happens; the answer, which a real server sends with the Secret in it,
//! cannot be decoded — the case where kube's client logs the whole answer).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::ecr::{EcrStandIn, Mode};
use common::moto::Moto;
use common::otlp::OtlpReceiver;
use common::*;
use kube_standin::{FaultRule, Verb};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-refresh");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_answers_to_secret_writes_leave_no_token_in_logs_or_spans() {
    let receiver = OtlpReceiver::start().await;
    let moto = Moto::start();
    // Realistic tokens: a new one per call, living 6 s (so refreshed every 3 s: a patch).
    let ecr = EcrStandIn::start(&moto).await;
    ecr.set_mode(Mode::Realistic {
        lifetime: jiff::SignedDuration::from_secs(6),
    });
    let cluster = Cluster::start().await;
    for verb in [Verb::Create, Verb::Patch] {
        cluster
            .api
            .faults()
            .add(FaultRule::garble().verb(verb).gvr("v1/secrets"));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server.kubeconfig_yaml()).unwrap();
    let log_path = dir.path().join("operator.log");

    cluster.apply_sample("ecr-credentials", json!({}));
    let mut child = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_ENDPOINT_URL_ECR", &ecr.url)
        .env("AWS_ACCESS_KEY_ID", common::ecr::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", common::ecr::SECRET_ACCESS_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ECR_TOKEN_REFRESH_SERVER__LISTEN", "127.0.0.1:0")
        .env("ECR_TOKEN_REFRESH_REFRESH__MIN_INTERVAL", "1s")
        .env("RUST_LOG", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    // A refresh rewrites the Secret (a patch, garbled too).
    let patched = poll_until(Duration::from_secs(20), || {
        cluster
            .api
            .requests()
            .iter()
            .any(|r| r.verb == Verb::Patch && r.gvr == "v1/secrets" && r.succeeded())
    })
    .await;
    assert!(patched, "no Secret patch happened");
    let secret = cluster
        .secret("ecr-credentials")
        .expect("the write happened");
    let data = secret["data"][".dockerconfigjson"]
        .as_str()
        .unwrap()
        .to_string();

    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let stopped = poll_until(Duration::from_secs(15), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(stopped);
    receiver
        .wait_for(WAIT, |spans| spans.iter().any(|s| s.name == "k8s.write"))
        .await;

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.len() > 10_000,
        "trace logging is on: {} bytes",
        log.len()
    );
    let spans: String = receiver
        .spans()
        .iter()
        .map(|s| s.all_text())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(spans.contains("k8s.write"), "spans were exported");
    let b64 = base64::engine::general_purpose::STANDARD;
    let token_material = [
        "123456789012-auth-token".to_string(),
        b64.encode("AWS:123456789012-auth-token")[..24].to_string(),
        common::ecr::SECRET_ACCESS_KEY.to_string(),
        data.clone(),
        data[..40].to_string(),
    ];
    for needle in &token_material {
        assert!(
            !log.contains(needle.as_str()),
            "token material {needle:?} in the log"
        );
        assert!(
            !spans.contains(needle.as_str()),
            "token material {needle:?} in a span"
        );
    }
}
