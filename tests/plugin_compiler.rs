//! The operator binary compiles policy plugins in a child process of itself
//! (`compile-plugin`): the subcommand on its own, and a running operator that serves a
//! resource with a plugin it compiled that way.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-refresh");

/// `compile-plugin --max-bytes <max>` with `input` on stdin: (success, stdout, stderr).
fn compile(input: &[u8], max: u64) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(BIN)
        .args(["compile-plugin", "--max-bytes", &max.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Input over the limit is refused before it is all read: the pipe may close early.
    let _ = child.stdin.take().unwrap().write_all(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn compile_plugin_writes_the_compiled_component_and_refuses_junk_and_oversized_input() {
    let wasm = std::fs::read(plugins::wasm("naming-prefix")).unwrap();
    let (ok, artifact, err) = compile(&wasm, 32 << 20);
    assert!(ok, "{err}");
    // wasmtime's compiled artifacts are ELF images.
    assert_eq!(&artifact[..4], b"\x7fELF", "{err}");
    assert!(err.is_empty(), "{err}");

    let (ok, out, err) = compile(b"not a component", 32 << 20);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("failed to parse WebAssembly"), "{err}");

    let (ok, out, err) = compile(&wasm, 1000);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("larger than 1000 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_operator_serves_with_a_plugin_compiled_in_a_child_process() {
    let moto = moto::Moto::start();
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server.kubeconfig_yaml()).unwrap();
    let wasm = plugins::wasm("naming-prefix");
    let config = dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\npolicy:\n  plugins:\n    names:\n      path: {}\n      sha256: {}\n      settings: {{prefix: child}}\n",
            wasm.display(),
            plugins::sha256_of(&wasm)
        ),
    )
    .unwrap();
    let log = dir.path().join("operator.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = moto
        .operator_env(
            Command::new(BIN).args(["run", "--config"]).arg(&config),
            &kubeconfig,
        )
        .env("RUST_LOG", "ecr_token_refresh::policy=debug")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();

    cluster.apply_sample("r", json!({"policy": {"naming": "names"}}));
    let named = "child-123456789012-us-east-1";
    let served = cluster
        .api
        .wait_for(Duration::from_secs(120), |api| {
            api.get(SECRETS, Some("default"), named).is_some()
        })
        .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "no Secret {named}; operator log:\n{text}");
    let compiled = text
        .lines()
        .find(|l| l.contains("compiled policy plugin"))
        .unwrap_or_else(|| panic!("no compile logged:\n{text}"));
    assert!(
        compiled.contains(r#"compiled_in="child process""#),
        "{compiled}"
    );
}
