//! Access rules (issue 9): the cluster owner decides which namespaces may use which
//! registries and identities. The rules come from a config file read by the operator's own
//! loader; the real controller runs against the Kubernetes stand-in, and the real
//! aws-sdk-ecr token source against the ECR stand-in in front of moto, which counts every
//! `GetAuthorizationToken` request it receives.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::ecr::{EcrStandIn, Mode};
use common::moto::Moto;
use common::world::{NAMESPACES, assert_pull_secret_sound};
use common::*;
use ecr_token_refresh::config::{self, CliOverrides};
use ecr_token_refresh::controller::Settings;
use ecr_token_refresh::ecr::AwsTokenSource;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-refresh");

/// The README's locked-down multi-tenant setup, plus namespaces `apps-*` that may use the
/// operator's own identity for the `us-east-1` registries of any account.
const RULES: &str = r#"
access:
  rules:
    - namespaces: ["team-a-*"]
      registries: ["111111111111"]
      roles: ["arn:aws:iam::111111111111:role/team-a-*"]
    - namespaces: [platform]
      registries: ["*"]
      operator_identity: true
    - namespaces: ["apps-*"]
      registries: ["*.dkr.ecr.us-east-1.amazonaws.com"]
      operator_identity: true
"#;

const TEAM_A_HOST: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";

/// A config file holding `yaml`, in a directory removed on drop.
fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// The controller settings the operator would run with for `yaml`, with the tests' fast
/// timing.
fn settings_from(yaml: &str) -> Settings {
    let (_dir, path) = config_file(yaml);
    let loaded = config::load(Some(&path), &CliOverrides::default()).expect("config loads");
    Settings {
        access: loaded.config.controller_settings().access,
        ..fast_settings()
    }
}

/// moto, the counting ECR stand-in in front of it (realistic 12 h tokens), and the
/// Kubernetes stand-in.
struct Aws {
    _moto: Moto,
    ecr: EcrStandIn,
}

impl Aws {
    async fn start() -> Self {
        let moto = Moto::start();
        let ecr = EcrStandIn::start(&moto).await;
        ecr.set_mode(Mode::Realistic {
            lifetime: jiff::SignedDuration::from_hours(12),
        });
        Self { _moto: moto, ecr }
    }

    async fn tokens(&self) -> Arc<AwsTokenSource> {
        Arc::new(AwsTokenSource::new(
            self.ecr.sdk_config(1, Duration::from_secs(5)).await,
        ))
    }
}

fn create_namespace(cluster: &Cluster, name: &str) {
    cluster
        .api
        .create(
            NAMESPACES,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .unwrap();
}

fn apply(cluster: &Cluster, namespace: &str, name: &str, spec: Value) {
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        )
        .unwrap();
}

fn spec(host: &str) -> Value {
    json!({"ecrRegistry": host, "frequency": "8h", "region": "us-east-1"})
}

fn ready_in(cluster: &Cluster, namespace: &str, name: &str) -> Value {
    ready_of(
        &cluster
            .api
            .get(CRS, Some(namespace), name)
            .unwrap_or(Value::Null),
    )
}

async fn wait_ready_in(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> Value {
    let ok = cluster
        .api
        .wait_for(WAIT, |_| {
            let c = ready_in(cluster, namespace, name);
            c["status"] == status && c["reason"] == reason
        })
        .await;
    assert!(
        ok,
        "{namespace}/{name} never got Ready={status}/{reason}; last: {:#}",
        cluster
            .api
            .get(CRS, Some(namespace), name)
            .unwrap_or_default()["status"]
    );
    ready_in(cluster, namespace, name)
}

/// Waits for the Warning Event `NotPermitted` about `namespace/name`; returns its note.
async fn wait_not_permitted_event(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let find = || {
        cluster
            .api
            .list(EVENTS, Some(namespace))
            .into_iter()
            .find(|e| {
                e["regarding"]["name"] == name
                    && e["type"] == "Warning"
                    && e["reason"] == "NotPermitted"
            })
            .map(|e| e["note"].as_str().unwrap_or_default().to_string())
    };
    let ok = cluster.api.wait_for(WAIT, |_| find().is_some()).await;
    assert!(ok, "no Warning Event NotPermitted about {namespace}/{name}");
    find().unwrap_or_default()
}

#[tokio::test]
async fn without_rules_the_original_sample_becomes_ready() {
    let aws = Aws::start().await;
    let cluster = Cluster::start().await;
    // A config file without an access section: the defaults, no rules.
    let settings = settings_from("log:\n  level: info\n");
    assert!(settings.access.is_open());
    let running = start_controller(cluster.client.clone(), aws.tokens().await, settings);
    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    assert_pull_secret_sound(&cluster.secret("ecr-credentials").unwrap());
    assert_eq!(aws.ecr.requests(), 1, "{:?}", aws.ecr.outcomes());
    running.stop().await;
}

#[tokio::test]
async fn what_no_rule_allows_is_not_permitted_without_any_aws_call() {
    let aws = Aws::start().await;
    let cluster = Cluster::start().await;
    for ns in ["team-b", "team-a-dev", "apps-web"] {
        create_namespace(&cluster, ns);
    }
    let running = start_controller(
        cluster.client.clone(),
        aws.tokens().await,
        settings_from(RULES),
    );

    // (namespace, name, spec, what the message must name)
    let role_b = "arn:aws:iam::111111111111:role/team-b-ci";
    let mut with_role = spec(TEAM_A_HOST);
    with_role["auth"] = json!({"roleArn": role_b});
    let mut with_public = spec(HOST);
    with_public["additionalRegistries"] = json!(["public.ecr.aws"]);
    let denied = [
        // No rule names the namespace.
        (
            "team-b",
            "stray",
            spec(HOST),
            format!("namespace \"team-b\" may not use registry {HOST}"),
        ),
        // The team's account, but with the operator's own identity.
        (
            "team-a-dev",
            "own-identity",
            spec(TEAM_A_HOST),
            format!(
                "namespace \"team-a-dev\" may not use the operator's own identity for registry {TEAM_A_HOST}"
            ),
        ),
        // The team's account, but another team's role.
        (
            "team-a-dev",
            "other-role",
            with_role,
            format!(
                "namespace \"team-a-dev\" may not use role {role_b} for registry {TEAM_A_HOST}"
            ),
        ),
        // Every registry of the Secret must be allowed: ECR Public is not.
        (
            "apps-web",
            "public-too",
            with_public,
            "namespace \"apps-web\" may not use registry public.ecr.aws".to_string(),
        ),
    ];
    for (ns, name, spec, _) in &denied {
        apply(&cluster, ns, name, spec.clone());
    }
    for (ns, name, _, names) in &denied {
        let c = wait_ready_in(&cluster, ns, name, "False", "NotPermitted").await;
        let message = c["message"].as_str().unwrap();
        assert!(message.starts_with(names.as_str()), "{message}");
        let cr = cluster.api.get(CRS, Some(ns), name).unwrap();
        assert_eq!(cr["status"]["phase"], "Failed", "{cr}");
        assert_eq!(cr["status"]["error"], message);
        let note = wait_not_permitted_event(&cluster, ns, name).await;
        assert!(note.starts_with(names.as_str()), "{note}");
        assert!(
            cluster.api.get(SECRETS, Some(ns), name).is_none(),
            "{ns}/{name} got a Secret"
        );
    }
    settle(&cluster.api, Duration::from_millis(500)).await;
    assert_eq!(
        aws.ecr.requests(),
        0,
        "ECR was asked for a refused resource: {:?}",
        aws.ecr.outcomes()
    );

    // A namespace and a registry allowed by globs: served, through the same stand-in.
    apply(&cluster, "apps-web", "allowed", spec(HOST));
    wait_ready_in(&cluster, "apps-web", "allowed", "True", "TokenRefreshed").await;
    assert_pull_secret_sound(
        &cluster
            .api
            .get(SECRETS, Some("apps-web"), "allowed")
            .unwrap(),
    );
    assert_eq!(aws.ecr.requests(), 1, "{:?}", aws.ecr.outcomes());

    // The refused ones stay refused and quiet: one Event each, no retry.
    settle(&cluster.api, Duration::from_millis(500)).await;
    assert_eq!(aws.ecr.requests(), 1);
    for (ns, name, _, _) in &denied {
        let warnings = cluster
            .api
            .list(EVENTS, Some(ns))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == *name && e["reason"] == "NotPermitted")
            .count();
        assert_eq!(warnings, 1, "{ns}/{name}");
        assert!(
            cluster.api.get(CRS, Some(ns), name).unwrap()["status"]["nextRefreshTime"].is_null()
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn secrets_written_before_the_rules_are_left_as_they_are() {
    let aws = Aws::start().await;
    let cluster = Cluster::start().await;
    let running = start_controller(
        cluster.client.clone(),
        aws.tokens().await,
        settings_from(""),
    );
    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    running.stop().await;
    let before = cluster.secret("ecr-credentials").unwrap();
    let requests = aws.ecr.requests();

    // The cluster owner locks the operator down; `default` is not among the namespaces.
    let running = start_controller(
        cluster.client.clone(),
        aws.tokens().await,
        settings_from(RULES),
    );
    let c = cluster
        .wait_ready("ecr-credentials", "False", "NotPermitted")
        .await;
    assert!(
        c["message"].as_str().unwrap().starts_with(&format!(
            "namespace \"default\" may not use registry {HOST}"
        )),
        "{c}"
    );
    cluster
        .wait_event("ecr-credentials", "Warning", "NotPermitted")
        .await;
    settle(&cluster.api, Duration::from_millis(500)).await;
    let after = cluster.secret("ecr-credentials").unwrap();
    assert_eq!(
        (&after["metadata"]["resourceVersion"], &after["data"]),
        (&before["metadata"]["resourceVersion"], &before["data"]),
        "the Secret was touched"
    );
    assert_eq!(aws.ecr.requests(), requests);
    running.stop().await;
}

#[test]
fn a_bad_rule_stops_start_up_naming_its_key_and_file() {
    let (_dir, path) = config_file(
        r#"
access:
  rules:
    - namespaces: [platform]
      registries: ["*"]
      operator_identity: true
    - namespaces: []
      registries: ["11111111111"]
      roles: ["arn:aws:iam::111111111111:role/team-a-*"]
"#,
    );
    let e = config::load(Some(&path), &CliOverrides::default())
        .expect_err("a bad rule is refused")
        .to_string();
    assert!(
        e.contains("access.rules.1.registries.0: \"11111111111\" is not an account ID (12 digits)"),
        "{e}"
    );
    assert!(
        e.contains("access.rules.1.namespaces: must list at least one"),
        "{e}"
    );
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(!e.contains("access.rules.0"), "the good rule is fine: {e}");

    // An unknown key in a rule (camelCase instead of the file's snake_case) names it too.
    let (_dir, path) = config_file(
        "access:\n  rules:\n    - namespaces: [a]\n      registries: [\"111111111111\"]\n      operatorIdentity: true\n",
    );
    let e = config::load(Some(&path), &CliOverrides::default())
        .expect_err("an unknown key is refused")
        .to_string();
    assert!(
        e.contains("operatorIdentity") && e.contains("unknown key"),
        "{e}"
    );

    // The binary refuses to start with it, naming the key.
    let out = Command::new(BIN)
        .args(["config", "--config"])
        .arg(&path)
        .env_remove("ECR_TOKEN_REFRESH_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operatorIdentity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_config_command_shows_the_rules() {
    let (_dir, path) = config_file(RULES);
    let out = Command::new(BIN)
        .args(["config", "--config"])
        .arg(&path)
        .env_remove("ECR_TOKEN_REFRESH_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!(
        r#"access:
  rules:  # file {}
    - namespaces: ["team-a-*"]
      operator_identity: false
      registries: ["111111111111"]
      roles: ["arn:aws:iam::111111111111:role/team-a-*"]
    - namespaces: ["platform"]
      operator_identity: true
      registries: ["*"]
      roles: []
    - namespaces: ["apps-*"]
      operator_identity: true
      registries: ["*.dkr.ecr.us-east-1.amazonaws.com"]
      roles: []
"#,
        path.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains("# access: 3 rules; a resource whose namespace, registries and identity no rule allows is refused (Ready=False, NotPermitted)"),
        "{text}"
    );

    // Without a file: no rules, said in words.
    let out = Command::new(BIN)
        .arg("config")
        .env_remove("ECR_TOKEN_REFRESH_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  rules: []  # default\n"), "{text}");
    assert!(
        text.contains("# access: no rules; every namespace may use every registry and identity"),
        "{text}"
    );
}
