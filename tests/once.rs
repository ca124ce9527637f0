//! `ecr-token-refresh once`: the real binary against the Kubernetes stand-in and the ECR
//! stand-in (moto behind a proxy that issues realistic tokens), configured like `run`
//! through `KUBECONFIG`, the standard `AWS_*` variables and `ECR_TOKEN_REFRESH_*`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ecr::{EcrStandIn, Fault, Mode};
use common::moto::Moto;
use common::world::NAMESPACES;
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-refresh");
const LEASES: &str = "coordination.k8s.io/v1/leases";
/// How long one `once` may take before the test gives up on it.
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

struct Env {
    _moto: Moto,
    ecr: EcrStandIn,
    cluster: Cluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// What one run of the binary left: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The summary line of `resource` (`namespace/name`), split into its three columns.
    fn line(&self, resource: &str) -> (String, String) {
        let line = self
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(resource))
            .unwrap_or_else(|| panic!("no line for {resource} in:\n{}", self.stdout));
        let mut parts = line.splitn(2, "  ").map(str::trim);
        parts.next();
        let rest = parts.next().unwrap_or_default().trim_start();
        let (outcome, detail) = rest.split_once("  ").unwrap_or((rest, ""));
        (outcome.trim().to_string(), detail.trim().to_string())
    }
}

async fn env() -> Env {
    let moto = Moto::start();
    let ecr = EcrStandIn::start(&moto).await;
    ecr.set_mode(Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    let cluster = Cluster::start().await;
    for ns in ["apps", "team-b", "ops"] {
        cluster
            .api
            .create(
                NAMESPACES,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server.kubeconfig_yaml()).unwrap();
    Env {
        _moto: moto,
        ecr,
        cluster,
        dir,
        kubeconfig,
    }
}

impl Env {
    fn apply(&self, namespace: &str, name: &str, extra: Value) {
        let mut spec = json!({"ecrRegistry": HOST, "frequency": "8h", "region": "us-east-1"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        self.cluster
            .api
            .create(
                CRS,
                json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
            )
            .unwrap();
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.cluster.api.get(SECRETS, Some(namespace), name)
    }

    fn ready(&self, namespace: &str, name: &str) -> Value {
        ready_of(
            &self
                .cluster
                .api
                .get(CRS, Some(namespace), name)
                .unwrap_or(Value::Null),
        )
    }

    /// Runs `ecr-token-refresh once ARGS` with `vars`, and waits for it to exit.
    async fn once(&self, args: &[&str], vars: &[(&str, &str)]) -> Ran {
        let out = self.dir.path().join("stdout");
        let err = self.dir.path().join("stderr");
        let mut cmd = Command::new(BIN);
        cmd.arg("once")
            .args(args)
            .env_clear()
            .env("KUBECONFIG", &self.kubeconfig)
            .env("AWS_ENDPOINT_URL_ECR", &self.ecr.url)
            .env("AWS_ENDPOINT_URL_ECR_PUBLIC", &self.ecr.url)
            .env("AWS_ACCESS_KEY_ID", common::ecr::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", common::ecr::SECRET_ACCESS_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut status = None;
        let exited = poll_until(PASS_TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert!(
            exited,
            "once did not finish within {PASS_TIMEOUT:?}; stderr:\n{}",
            read(&err)
        );
        Ran {
            code: status.and_then(|s| s.code()),
            stdout: read(&out),
            stderr: read(&err),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_the_secrets_of_every_resource_and_exits_0() {
    let env = env().await;
    env.apply("apps", "ecr-credentials", json!({}));
    env.apply("team-b", "pull", json!({"frequency": "1h30m"}));

    let ran = env.once(&[], &[]).await;
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    // One line per resource, nothing else; logs went to stderr.
    assert_eq!(ran.stdout.lines().count(), 2, "{}", ran.stdout);
    assert!(ran.stderr.contains("pass done"), "{}", ran.stderr);
    for (ns, name) in [("apps", "ecr-credentials"), ("team-b", "pull")] {
        let (outcome, detail) = ran.line(&format!("{ns}/{name}"));
        assert_eq!(outcome, "Ready", "{}", ran.stdout);
        let ready = env.ready(ns, name);
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "TokenRefreshed");
        assert_eq!(detail, ready["message"].as_str().unwrap());
        let secret = env
            .secret(ns, name)
            .unwrap_or_else(|| panic!("no Secret {ns}/{name}"));
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], name);
    }
    // Both share one token (same registry, same identity): one ECR call.
    assert_eq!(env.ecr.requests(), 1);
    // No credential on stdout or stderr.
    for text in [&ran.stdout, &ran.stderr] {
        assert!(!text.contains("auth-token"), "{text}");
        assert!(!text.contains(common::ecr::SECRET_ACCESS_KEY), "{text}");
    }
    println!(
        "$ ecr-token-refresh once   # exit {:?}\n{}",
        ran.code, ran.stdout
    );

    // The next pass, 6 h later by default: a token that is due only in 8 h (or 1h30m) is
    // kept... unless it would be due before the next pass.
    let data = |ns: &str, name: &str| env.secret(ns, name).unwrap()["data"].clone();
    let (apps, team_b) = (data("apps", "ecr-credentials"), data("team-b", "pull"));
    let ran = env.once(&[], &[]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        data("apps", "ecr-credentials"),
        apps,
        "not due before the next pass"
    );
    assert_ne!(
        data("team-b", "pull"),
        team_b,
        "due in 1h30m, before the next pass"
    );
    assert_eq!(env.ecr.requests(), 2);
    // With the next pass 9 h away, the 8 h one is refreshed now too.
    let ran = env.once(&["--next-run-in", "9h"], &[]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_ne!(data("apps", "ecr-credentials"), apps);
    assert_eq!(env.ecr.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_non_zero_naming_each_failing_resource_and_why() {
    let env = env().await;
    env.apply("apps", "ecr-credentials", json!({}));
    // A spec the operator refuses: `frequency` is not a Go duration.
    env.apply("team-b", "broken", json!({"frequency": "often"}));
    // ECR Public refuses this resource's second registry.
    env.apply(
        "team-b",
        "mirror",
        json!({"additionalRegistries": ["public.ecr.aws"]}),
    );
    env.ecr.fail_next_public(100, Fault::AccessDenied);

    let ran = env.once(&[], &[]).await;
    println!(
        "$ ecr-token-refresh once   # exit {:?}\n{}",
        ran.code, ran.stdout
    );
    assert_eq!(
        ran.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(ran.stdout.lines().count(), 3, "{}", ran.stdout);

    // The good one got its Secret and says so.
    let (outcome, _) = ran.line("apps/ecr-credentials");
    assert_eq!(outcome, "Ready");
    assert!(env.secret("apps", "ecr-credentials").is_some());

    // Each failing one is named with the reason and message its status holds.
    let (outcome, detail) = ran.line("team-b/broken");
    assert_eq!(outcome, "NotReady", "{}", ran.stdout);
    let ready = env.ready("team-b", "broken");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        detail,
        format!("InvalidSpec: {}", ready["message"].as_str().unwrap())
    );
    assert!(detail.contains("often"), "{detail}");
    assert!(env.secret("team-b", "broken").is_none());

    let (outcome, detail) = ran.line("team-b/mirror");
    assert_eq!(outcome, "NotReady", "{}", ran.stdout);
    let ready = env.ready("team-b", "mirror");
    assert_eq!(ready["status"], "False");
    assert_eq!(
        detail,
        format!(
            "{}: {}",
            ready["reason"].as_str().unwrap(),
            ready["message"].as_str().unwrap()
        )
    );
    assert!(
        detail.contains("public.ecr.aws") || detail.contains("ecr-public"),
        "{detail}"
    );
    assert!(env.secret("team-b", "mirror").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_serves_only_the_watched_namespaces() {
    let env = env().await;
    env.apply("apps", "creds", json!({}));
    env.apply("team-b", "creds", json!({}));
    env.apply("ops", "creds", json!({}));
    let ran = env
        .once(
            &[],
            &[("ECR_TOKEN_REFRESH_WATCH__NAMESPACES", "apps,team-b")],
        )
        .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.lines().count(), 2, "{}", ran.stdout);
    assert!(!ran.stdout.contains("ops/"), "{}", ran.stdout);
    assert!(env.secret("apps", "creds").is_some());
    assert!(env.secret("team-b", "creds").is_some());
    assert!(env.secret("ops", "creds").is_none());
    assert!(env.ready("ops", "creds").is_null());
}

/// A Lease held by a live controller.
fn held_lease(env: &Env, holder: &str) {
    let now = jiff::Timestamp::now().to_string();
    env.cluster
        .api
        .create(
            LEASES,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "ecr-token-refresh-leader", "namespace": "ops"},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 300,
                            "acquireTime": now, "renewTime": now}}),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_once_takes_the_lease_and_never_runs_beside_a_controller() {
    let env = env().await;
    env.apply("apps", "creds", json!({}));
    let election = [
        ("ECR_TOKEN_REFRESH_LEADER_ELECTION__ENABLED", "true"),
        (
            "ECR_TOKEN_REFRESH_LEADER_ELECTION__LEASE_NAME",
            "ecr-token-refresh-leader",
        ),
        ("POD_NAMESPACE", "ops"),
        ("POD_NAME", "once-28930121-abcde"),
    ];
    // No controller: the pass takes the Lease, runs, and gives it back.
    let ran = env.once(&[], &election).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(env.secret("apps", "creds").is_some());
    let lease = env
        .cluster
        .api
        .get(LEASES, Some("ops"), "ecr-token-refresh-leader")
        .expect("the Lease was created");
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    assert_ne!(holder, "once-28930121-abcde", "released: {lease:#}");

    // A controller holds it: the pass refuses, writes nothing, exits non-zero.
    env.cluster
        .api
        .delete(LEASES, Some("ops"), "ecr-token-refresh-leader")
        .unwrap();
    held_lease(&env, "controller-manager-7d9f-x2");
    env.apply("apps", "second", json!({}));
    let ran = env.once(&[], &election).await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);
    assert!(
        ran.stderr
            .contains("a running controller holds the Lease ops/ecr-token-refresh-leader"),
        "{}",
        ran.stderr
    );
    assert!(env.secret("apps", "second").is_none());
    assert!(env.ready("apps", "second").is_null());
}
