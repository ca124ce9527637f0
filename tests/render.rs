//! `ecr-token-refresh render`: the real binary, offline (no cluster, no AWS), on the
//! samples, on bad resources and on a fan-out with the example label plugin and a
//! cluster-state file.

#[path = "common/plugins.rs"]
mod plugins;

use std::path::Path;
use std::process::{Command, Output};

fn render(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"))
        .arg("render")
        .args(args)
        .current_dir(dir)
        // No config from the environment of whoever runs the tests.
        .env_remove("ECR_TOKEN_REFRESH_CONFIG")
        .output()
        .expect("cannot run ecr-token-refresh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The YAML documents of `stdout` that are Secrets.
fn secrets(stdout: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(stdout)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &serde_yaml::Value| v.get("kind").and_then(|k| k.as_str()) == Some("Secret"))
        .collect()
}

#[test]
fn the_sample_renders_its_secret_with_a_placeholder_password() {
    let out = render(
        &["-f", "config/samples/ecr_v1alpha1_ecrtokenrefresh.yaml"],
        &plugins::repo_root(),
    );
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found = secrets(&stdout);
    assert_eq!(found.len(), 1, "{stdout}");
    let s = &found[0];
    assert_eq!(s["metadata"]["name"].as_str(), Some("ecr-credentials"));
    assert_eq!(s["metadata"]["namespace"].as_str(), Some("default"));
    assert_eq!(s["type"].as_str(), Some("kubernetes.io/dockerconfigjson"));
    let doc: serde_json::Value =
        serde_json::from_str(s["stringData"][".dockerconfigjson"].as_str().unwrap()).unwrap();
    let entry = &doc["auths"]["123456789012.dkr.ecr.us-east-1.amazonaws.com"];
    assert_eq!(entry["username"], "AWS");
    assert_eq!(
        entry["password"],
        ecr_token_refresh::render::PLACEHOLDER_PASSWORD
    );
    assert!(stdout.contains("# naming (built-in): default -> Secret ecr-credentials"));
}

#[test]
fn bad_resources_exit_non_zero_naming_file_resource_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: ecr.aws.edenlab.io/v1alpha1\nkind: ECRTokenRefresh\n\
         metadata: {name: good, namespace: apps}\n\
         spec: {ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com, frequency: 8h}\n\
         ---\n\
         apiVersion: ecr.aws.edenlab.io/v1alpha1\nkind: ECRTokenRefresh\n\
         metadata: {name: slow, namespace: apps}\n\
         spec: {ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com, frequency: eight hours}\n\
         ---\n\
         apiVersion: ecr.aws.edenlab.io/v1alpha1\nkind: ECRTokenRefresh\n\
         metadata: {name: noreg, namespace: apps}\n\
         spec: {frequency: 8h}\n\
         ---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
    )
    .unwrap();
    let out = render(&["-f", "bad.yaml"], dir.path());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.yaml#2: ECRTokenRefresh apps/slow: InvalidSpec: spec.frequency:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.yaml#3: ECRTokenRefresh noreg:") && stderr.contains("ecrRegistry"),
        "{stderr}"
    );
    assert!(!stderr.contains("ConfigMap"), "{stderr}");
    // The good one is still printed.
    assert_eq!(secrets(&stdout).len(), 1, "{stdout}");
}

#[test]
fn a_fanout_resource_with_the_label_plugin_lists_the_labelled_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugins::wasm("fanout-label");
    std::fs::write(
        dir.path().join("operator.yaml"),
        format!(
            "policy:\n  plugins:\n    labelled:\n      path: {}\n      sha256: {}\n      \
             settings: {{label: ecr-pull, value: enabled}}\n\
             fanout:\n  allowed_source_namespaces: [platform]\n",
            wasm.display(),
            plugins::sha256_of(&wasm)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pull.yaml"),
        "apiVersion: ecr.aws.edenlab.io/v1alpha1\nkind: ECRTokenRefresh\n\
         metadata: {name: pull, namespace: platform}\n\
         spec:\n  ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com\n  frequency: 8h\n  \
         serviceAccounts: [default]\n  policy: {fanout: labelled}\n",
    )
    .unwrap();
    // As `kubectl get ns,sa -A -o yaml` prints it: a List.
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "apiVersion: v1\nkind: List\nitems:\n\
         - {apiVersion: v1, kind: Namespace, metadata: {name: platform}}\n\
         - {apiVersion: v1, kind: Namespace, metadata: {name: team-a, labels: {ecr-pull: enabled}}}\n\
         - {apiVersion: v1, kind: Namespace, metadata: {name: team-b, labels: {ecr-pull: enabled}}}\n\
         - {apiVersion: v1, kind: Namespace, metadata: {name: team-c}}\n\
         - apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: default, namespace: team-a, resourceVersion: '5'}\n  \
           imagePullSecrets: [{name: other}]\n\
         - {apiVersion: v1, kind: ServiceAccount, metadata: {name: default, namespace: team-c}}\n",
    )
    .unwrap();
    let out = render(
        &[
            "-f",
            "pull.yaml",
            "--cluster-state",
            "cluster.yaml",
            "--config",
            "operator.yaml",
        ],
        dir.path(),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("# fan-out (plugin labelled): 2 namespace(s): team-a, team-b"),
        "{stdout}"
    );
    let placed: Vec<String> = secrets(&stdout)
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["metadata"]["namespace"].as_str().unwrap(),
                s["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(placed, ["team-a/pull", "team-b/pull"]);
    assert!(
        stdout.contains("# ServiceAccount team-a/default: imagePullSecrets -> [other, pull]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# ServiceAccount team-b/default: not in the cluster state"),
        "{stdout}"
    );
    assert!(!stdout.contains("team-c"), "{stdout}");

    // Without the cluster state, only the resource's own namespace is known.
    let out = render(
        &["-f", "pull.yaml", "--config", "operator.yaml"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("# fan-out (plugin labelled): 0 namespace(s)"),
        "{stdout}"
    );
}
