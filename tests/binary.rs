//! The real `ecr-token-refresh run` binary, configured only through `KUBECONFIG`, the
//! standard `AWS_*` variables and `ECR_TOKEN_REFRESH_*` overrides, against the Kubernetes
//! stand-in and moto.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_binary_turns_the_sample_into_a_secret_and_survives_an_ecr_outage() {
    let mut moto = Moto::start();
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server.kubeconfig_yaml()).unwrap();
    let log_path = dir.path().join("operator.log");

    cluster.apply_sample("ecr-credentials", json!({}));
    let started = Instant::now();
    let mut child = moto
        .operator_env(
            Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh")).arg("run"),
            &kubeconfig,
        )
        .env("ECR_TOKEN_REFRESH_REFRESH__BACKOFF_BASE", "500ms")
        .env("ECR_TOKEN_REFRESH_REFRESH__BACKOFF_MAX", "2s")
        // moto's tokens arrive expired: they are refreshed at this minimum interval.
        .env("ECR_TOKEN_REFRESH_REFRESH__MIN_INTERVAL", "2s")
        .env("ECR_TOKEN_REFRESH_SERVER__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    let ready = cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let to_secret = started.elapsed();
    eprintln!("start to Secret: {to_secret:?}");
    let secret = cluster.secret("ecr-credentials").expect("Secret written");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["name"],
        "ecr-credentials"
    );
    assert_eq!(ready["observedGeneration"], 1);

    // ECR goes away; the next refresh (moto's token is always due within 2 s) fails.
    // The Secret stays.
    let port = moto.port;
    moto.stop();
    cluster
        .wait_ready("ecr-credentials", "False", "ECRUnreachable")
        .await;
    assert_eq!(
        cluster.secret("ecr-credentials").unwrap()["data"],
        secret["data"]
    );

    // ECR comes back; the retries pick it up.
    let _moto = Moto::start_on(port);
    let ready = cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    assert_eq!(ready["observedGeneration"], 1);

    // SIGTERM stops it cleanly.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped = poll_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(stopped, "the operator did not stop within 10 s of SIGTERM");
    assert!(child.wait().unwrap().success());

    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("secrets written"), "{log}");
    assert!(log.contains("shutdown signal received"), "{log}");
    assert!(
        // Even at trace level (RUST_LOG=trace above): neither the password nor the
        // base64 authorizationToken (moto's is base64 of "AWS:123456789012-auth-token").
        !log.contains("auth-token") && !log.contains("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu"),
        "the token leaked into the log:\n{log}"
    );
}

#[tokio::test]
async fn crd_subcommand_prints_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/crd/ecr.aws.edenlab.io_ecrtokenrefreshes.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[tokio::test]
async fn run_without_a_cluster_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Nothing listens on port 9 (discard) here.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"))
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ECR_TOKEN_REFRESH_SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is the CRD installed"), "{stderr}");
}
