//! The plugins directory, live: the real controller against the Kubernetes stand-in with
//! policies started as the operator starts them ([`Policies::start`] + the reloader
//! watching `policy.directory`). Files are dropped, replaced, broken and removed while it
//! runs; the rescan interval is an hour, so the file-system notifications are what
//! drive every change here.

mod common;
use common::plugins;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tokens::ScriptedTokens;
use common::*;
use ecr_token_refresh::metrics::{Metrics, encode_text};
use ecr_token_refresh::policy::{
    BuiltinRetry, HostConfig, LoadError, LoadState, PluginRegistry, PluginsError, Policies,
    ReloadTask,
};
use serde_json::json;

/// The Secret name the example naming plugin gives with `prefix`.
fn prefixed(prefix: &str) -> String {
    format!("{prefix}-123456789012-us-east-1")
}

/// A registry with `policy.directory = dir` (and the config file plugins of `yaml`).
fn registry(dir: &Path, yaml: &str) -> PluginRegistry {
    let mut r = PluginRegistry::from_yaml(yaml, &plugins::repo_root()).unwrap();
    r.directory = Some(dir.to_path_buf());
    r.rescan_interval_ms = Some(3_600_000);
    r
}

/// Live policies as the operator starts them, with fast built-in retries.
fn live(registry: &PluginRegistry, metrics: &Arc<Metrics>) -> (Arc<Policies>, ReloadTask) {
    let (policies, reloader) = Policies::start(registry, HostConfig::default()).unwrap();
    let policies = Arc::new(
        policies
            .with_builtin_retry(BuiltinRetry {
                base: Duration::from_millis(200),
                cap: Duration::from_secs(2),
                ..BuiltinRetry::default()
            })
            .with_metrics(Arc::clone(metrics)),
    );
    let task = reloader.spawn(Arc::clone(&policies));
    (policies, task)
}

/// The naming example registered in the config file as plugin `names` (prefix `cfg`):
/// its path and the `policy` YAML.
fn names_in_config() -> (PathBuf, String) {
    let path = plugins::wasm("naming-prefix");
    let config = format!(
        "plugins:\n  names:\n    path: {}\n    sha256: {}\n    settings: {{prefix: cfg}}\n",
        path.display(),
        plugins::sha256_of(&path)
    );
    (path, config)
}

/// The controller on `cluster` with `policies`, scripted tokens and fast settings.
fn controller(cluster: &Cluster, policies: &Arc<Policies>) -> Running {
    start_controller_with(
        cluster.client.clone(),
        Arc::new(ScriptedTokens::default()),
        Arc::clone(policies),
        fast_settings(),
    )
}

/// Writes `bytes` to `dir/name` atomically (a dot file renamed over it), as `kubectl cp`
/// or an init container's `mv` would.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn wasm_bytes(krate: &str) -> Vec<u8> {
    std::fs::read(plugins::wasm(krate)).unwrap()
}

fn secret_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .api
        .list(SECRETS, Some("default"))
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// Waits until the Secrets in `default` are exactly `want`.
async fn wait_secrets(cluster: &Cluster, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let ok = cluster
        .api
        .wait_for(WAIT, |api| {
            let mut names: Vec<String> = api
                .list(SECRETS, Some("default"))
                .iter()
                .filter_map(|s| s["metadata"]["name"].as_str().map(String::from))
                .collect();
            names.sort();
            names == want
        })
        .await;
    assert!(
        ok,
        "secrets: {:?}, want {want:?}; status: {:#}",
        secret_names(cluster),
        cluster.cr("r")["status"]
    );
}

/// Waits until the metrics text has `line` (e.g. a counter at a value).
async fn wait_metric(metrics: &Metrics, line: &str) {
    let registry = metrics.registry();
    let ok = poll_until(WAIT, || encode_text(&registry).contains(line)).await;
    assert!(ok, "no {line:?} in\n{}", encode_text(&registry));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_replaced_broken_and_removed_plugins_while_the_controller_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let metrics = Arc::new(Metrics::default());
    let (policies, _reloader) = live(&registry(d, ""), &metrics);
    let cluster = Cluster::start().await;
    let running = controller(&cluster, &policies);

    // Selecting a plugin nobody registered yet: PolicyFailed, no Secret.
    cluster.apply_sample("r", json!({"policy": {"naming": "names"}}));
    let c = cluster.wait_ready("r", "False", "PolicyFailed").await;
    assert!(
        c["message"].as_str().unwrap().contains("not registered"),
        "{c}"
    );
    assert!(secret_names(&cluster).is_empty());

    // Dropped in (sidecar first, then the component): picked up, the resource is Ready
    // with the plugin's name.
    std::fs::write(d.join("names.yaml"), "settings:\n  prefix: team\n").unwrap();
    let dropped = Instant::now();
    put(d, "names.wasm", &wasm_bytes("naming-prefix"));
    cluster.wait_ready("r", "True", "TokenRefreshed").await;
    wait_secrets(&cluster, &[&prefixed("team")]).await;
    eprintln!(
        "measured: drop -> resource Ready with the new plugin: {:?} (debug build)",
        dropped.elapsed()
    );
    let first = policies.plugin("names").expect("loaded");
    assert_eq!(
        first.sha256(),
        plugins::sha256_of(&plugins::wasm("naming-prefix"))
    );
    wait_metric(
        &metrics,
        r#"ecr_token_refresh_plugin_loaded{plugin="names"} 1"#,
    )
    .await;

    // New settings: the same component, a new decision; the old Secret is pruned.
    let replaced = Instant::now();
    put(d, "names.yaml", b"settings:\n  prefix: blue\n");
    wait_secrets(&cluster, &[&prefixed("blue")]).await;
    eprintln!(
        "measured: sidecar replaced -> Secret renamed: {:?} (debug build)",
        replaced.elapsed()
    );
    let c = cluster.wait_ready("r", "True", "TokenRefreshed").await;
    assert!(c["message"].is_string(), "{c}");

    // A broken replacement (garbage): refused, reported, the previous version keeps
    // serving.
    put(d, "names.wasm", b"\0asm but not really a component");
    wait_metric(
        &metrics,
        r#"ecr_token_refresh_plugin_loads_total{plugin="names",outcome="rejected"} 1"#,
    )
    .await;
    let note = cluster
        .wait_event("r", "Warning", "PluginReplacementRejected")
        .await;
    assert!(
        note.contains("names") && note.contains("previous version keeps serving"),
        "{note}"
    );
    let status = policies.statuses()["names"].clone();
    assert!(matches!(status.state, LoadState::Loaded(_)), "{status:?}");
    assert!(
        matches!(
            status.rejected.as_ref().map(|r| &r.error),
            Some(LoadError::NotAComponent(_))
        ),
        "{status:?}"
    );
    assert_eq!(policies.plugin("names").unwrap().sha256(), first.sha256());
    assert_eq!(
        policies.plugin("names").unwrap().settings_json(),
        r#"{"prefix":"blue"}"#
    );
    // A replacement whose settings the plugin refuses: refused too.
    put(d, "names.wasm", &wasm_bytes("settings-rejected"));
    wait_metric(
        &metrics,
        r#"ecr_token_refresh_plugin_loads_total{plugin="names",outcome="rejected"} 2"#,
    )
    .await;
    assert_eq!(
        policies.plugin("names").unwrap().sha256(),
        first.sha256(),
        "the previous version serves"
    );
    cluster.wait_ready("r", "True", "TokenRefreshed").await;
    assert_eq!(secret_names(&cluster), [prefixed("blue")]);

    // Removed: the resource reports PolicyFailed and its Secret stays.
    std::fs::remove_file(d.join("names.wasm")).unwrap();
    let c = cluster.wait_ready("r", "False", "PolicyFailed").await;
    assert!(c["message"].as_str().unwrap().contains("\"names\""), "{c}");
    assert!(
        c["message"].as_str().unwrap().contains("not registered"),
        "{c}"
    );
    assert_eq!(secret_names(&cluster), [prefixed("blue")], "Secret kept");
    wait_metric(
        &metrics,
        r#"ecr_token_refresh_plugin_loaded{plugin="names"} 0"#,
    )
    .await;

    // Back again: registered and used again.
    put(d, "names.wasm", &wasm_bytes("naming-prefix"));
    cluster.wait_ready("r", "True", "TokenRefreshed").await;
    wait_secrets(&cluster, &[&prefixed("blue")]).await;
    running.stop().await;
}

/// The layout of a ConfigMap volume: the files live in a timestamped directory behind
/// the `..data` symlink, each `NAME` a link to `..data/NAME`; an update writes a new
/// directory and renames a new `..data` link over the old one.
struct ConfigMapVolume {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, files: &[(&str, Vec<u8>)]) -> Self {
        let mut v = ConfigMapVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        v.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    fn update(&mut self, files: &[(&str, Vec<u8>)]) {
        self.version += 1;
        let ts = format!("..2026_12_05_10_0{}_00.{}", self.version, self.version);
        std::fs::create_dir(self.dir.join(&ts)).unwrap();
        for (name, bytes) in files {
            std::fs::write(self.dir.join(&ts).join(name), bytes).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_data_swap_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wasm_bytes("naming-prefix");
    let mut volume = ConfigMapVolume::new(
        dir.path(),
        &[
            ("names.wasm", wasm.clone()),
            ("names.yaml", b"settings: {prefix: red}\n".to_vec()),
        ],
    );
    let metrics = Arc::new(Metrics::default());
    let (policies, _reloader) = live(&registry(dir.path(), ""), &metrics);
    let cluster = Cluster::start().await;
    let running = controller(&cluster, &policies);
    cluster.apply_sample("r", json!({"policy": {"naming": "names"}}));
    cluster.wait_ready("r", "True", "TokenRefreshed").await;
    wait_secrets(&cluster, &[&prefixed("red")]).await;

    let swapped = Instant::now();
    volume.update(&[
        ("names.wasm", wasm),
        ("names.yaml", b"settings: {prefix: green}\n".to_vec()),
    ]);
    wait_secrets(&cluster, &[&prefixed("green")]).await;
    eprintln!(
        "measured: ..data swap -> Secret renamed: {:?} (debug build)",
        swapped.elapsed()
    );
    assert!(
        !policies.statuses().keys().any(|n| n.starts_with('.')),
        "{:?}",
        policies.statuses().keys()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_still_compiling_is_on_metrics_as_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = names_in_config();
    let metrics = Arc::new(Metrics::default());
    let (policies, reloader) =
        Policies::start(&registry(dir.path(), &config), HostConfig::default()).unwrap();
    // Registered, not compiled yet (the reloader has not started): 0, not absent.
    let policies = Arc::new(policies.with_metrics(Arc::clone(&metrics)));
    let text = encode_text(&metrics.registry());
    assert!(
        text.contains(r#"ecr_token_refresh_plugin_loaded{plugin="names"} 0"#),
        "{text}"
    );
    let _task = reloader.spawn(Arc::clone(&policies));
    wait_metric(
        &metrics,
        r#"ecr_token_refresh_plugin_loaded{plugin="names"} 1"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_the_config_file_and_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (path, config) = names_in_config();
    // At start-up: an error naming both sources.
    put(d, "names.wasm", &wasm_bytes("naming-prefix"));
    let err = Policies::start(&registry(d, &config), HostConfig::default()).unwrap_err();
    assert!(matches!(err, PluginsError::Conflict { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("policy.plugins.names")
            && msg.contains(&path.display().to_string())
            && msg.contains(&d.join("names.wasm").display().to_string()),
        "{msg}"
    );

    // Appearing later: refused and reported; the config file's plugin keeps serving.
    std::fs::remove_file(d.join("names.wasm")).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (policies, _reloader) = live(&registry(d, &config), &metrics);
    let cluster = Cluster::start().await;
    let running = controller(&cluster, &policies);
    cluster.apply_sample("r", json!({"policy": {"naming": "names"}}));
    wait_secrets(&cluster, &[&prefixed("cfg")]).await;
    put(d, "names.wasm", &wasm_bytes("retry-linear"));
    let note = cluster
        .wait_event("r", "Warning", "PluginReplacementRejected")
        .await;
    assert!(note.contains("policy.plugins.names"), "{note}");
    let status = policies.statuses()["names"].clone();
    assert!(
        matches!(
            status.rejected.as_ref().map(|r| &r.error),
            Some(LoadError::NameTaken { .. })
        ),
        "{status:?}"
    );
    assert_eq!(
        policies.plugin("names").unwrap().sha256(),
        plugins::sha256_of(&path)
    );
    cluster.wait_ready("r", "True", "TokenRefreshed").await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_sha256_refuses_a_file_without_a_pin_and_checks_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wasm = wasm_bytes("naming-prefix");
    put(d, "unpinned.wasm", &wasm);
    put(d, "pinned.wasm", &wasm);
    put(
        d,
        "pinned.yaml",
        format!(
            "sha256: {}\nsettings: {{prefix: p}}\n",
            plugins::sha256_of(&plugins::wasm("naming-prefix"))
        )
        .as_bytes(),
    );
    put(d, "wrong.wasm", &wasm);
    put(
        d,
        "wrong.yaml",
        format!("sha256: {}\n", "0".repeat(64)).as_bytes(),
    );
    let mut reg = registry(d, "");
    reg.require_sha256 = true;
    let policies = tokio::task::spawn_blocking(move || {
        Policies::try_load(&reg, HostConfig::default()).unwrap()
    })
    .await
    .unwrap();
    let table = policies.statuses();
    assert!(
        matches!(table["pinned"].state, LoadState::Loaded(_)),
        "{table:?}"
    );
    assert!(
        matches!(&table["unpinned"].state, LoadState::Failed(LoadError::PinRequired { sidecar }) if sidecar.ends_with("unpinned.yaml")),
        "{table:?}"
    );
    assert!(
        matches!(
            &table["wrong"].state,
            LoadState::Failed(LoadError::Sha256Mismatch { .. })
        ),
        "{table:?}"
    );
}

#[test]
fn plugin_list_shows_source_sha256_hooks_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugins_dir = d.join("plugins");
    std::fs::create_dir(&plugins_dir).unwrap();
    put(&plugins_dir, "labels.wasm", &wasm_bytes("fanout-label"));
    put(
        &plugins_dir,
        "labels.yaml",
        b"settings: {label: ecr-pull}\n",
    );
    put(&plugins_dir, "broken.wasm", b"not a component");
    let retry = plugins::wasm("retry-linear");
    let config = d.join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "policy:\n  directory: plugins\n  plugins:\n    backoff:\n      path: {}\n      sha256: {}\n",
            retry.display(),
            plugins::sha256_of(&retry)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"))
        .args(["plugin", "list", "--config"])
        .arg(&config)
        .env_remove("ECR_TOKEN_REFRESH_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plugin failed: exit 1\n{text}"
    );
    let block = |name: &str| -> String {
        text.split("\n\n")
            .flat_map(|b| b.split_inclusive('\n'))
            .skip_while(|l| l.trim_end() != name)
            .take(5)
            .collect()
    };
    let backoff = block("backoff");
    assert!(
        backoff.contains("config file key policy.plugins.backoff")
            && backoff.contains(&plugins::sha256_of(&retry))
            && backoff.contains("hooks:  retry")
            && backoff.contains("state:  loaded"),
        "{text}"
    );
    let labels = block("labels");
    assert!(
        labels.contains(&format!(
            "{} (policy.directory)",
            plugins_dir.join("labels.wasm").display()
        )) && labels.contains(&plugins::sha256_of(&plugins::wasm("fanout-label")))
            && labels.contains("hooks:  fanout")
            && labels.contains("state:  loaded"),
        "{text}"
    );
    let broken = block("broken");
    assert!(
        broken.contains("state:  failed: not a loadable WebAssembly component")
            && broken.contains(&plugins::sha256_of(&plugins_dir.join("broken.wasm"))),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_created_while_its_plugin_compiles_waits_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = names_in_config();
    // Registered, and held loading: the reloader that compiles it starts only below.
    let (policies, reloader) =
        Policies::start(&registry(dir.path(), &config), HostConfig::default()).unwrap();
    let policies = Arc::new(policies);
    let cluster = Cluster::start().await;
    let running = controller(&cluster, &policies);
    cluster.apply_sample("r", json!({"policy": {"naming": "names"}}));
    let c = cluster.wait_ready("r", "False", "PolicyLoading").await;
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(msg.contains("\"names\"") && msg.contains("naming"), "{msg}");
    // Waiting is not failing: no Failed phase, no error, no failure count, no Warning.
    let status = cluster.cr("r")["status"].clone();
    assert_ne!(status["phase"], "Failed", "{status:#}");
    assert!(status["error"].is_null(), "{status:#}");
    assert!(status["consecutiveFailures"].is_null(), "{status:#}");
    let note = cluster.wait_event("r", "Normal", "PolicyLoading").await;
    assert!(note.contains("\"names\""), "{note}");
    assert!(
        cluster.events("r").iter().all(|(t, _, _)| t != "Warning"),
        "{:?}",
        cluster.events("r")
    );
    assert!(secret_names(&cluster).is_empty());

    // The load reconciles it: Ready, under the plugin's name.
    let _task = reloader.spawn(Arc::clone(&policies));
    wait_secrets(&cluster, &[&prefixed("cfg")]).await;
    cluster.wait_ready("r", "True", "TokenRefreshed").await;
    running.stop().await;
}
