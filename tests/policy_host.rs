//! The wasmtime plugin host against real plugins built from `plugins/`:
//! example plugins answer as documented, misbehaving plugins fail only the
//! calls that use them, and the guardrails hold.

#[path = "common/plugins.rs"]
mod plugins;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ecr_token_refresh::policy::{
    AllowedNamespaces, CrInfo, Failure, FailureKind, Hook, HostConfig, Limits, LimitsOverride,
    LoadError, NamespaceInfo, PluginHost, PluginRegistration, PluginRegistry, Policies,
    PolicyError, PolicySelection, RetryDecision, Violation,
};
use serde_json::json;

fn host() -> Arc<PluginHost> {
    static HOST: OnceLock<Arc<PluginHost>> = OnceLock::new();
    HOST.get_or_init(|| Arc::new(PluginHost::new(HostConfig::default()).expect("plugin host")))
        .clone()
}

fn registration(
    crate_name: &str,
    settings: serde_json::Value,
    limits: LimitsOverride,
) -> PluginRegistration {
    let path = plugins::wasm(crate_name);
    PluginRegistration {
        sha256: plugins::sha256_of(&path),
        path,
        settings: Some(settings),
        limits,
    }
}

/// Every example and test plugin, registered under its crate name.
fn all_plugins() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| {
        let none = LimitsOverride::default;
        let mut plugins = BTreeMap::new();
        for name in [
            "naming-prefix",
            "invalid-name",
            "outside-candidates",
            "huge-output",
            "trap",
            "memory-bomb",
            "loop-forever",
            "settings-rejected",
            "sleepy",
        ] {
            let settings = if name == "naming-prefix" {
                json!({"prefix": "team-a"})
            } else {
                json!({})
            };
            plugins.insert(name.to_owned(), registration(name, settings, none()));
        }
        plugins.insert(
            "fanout-label".into(),
            registration(
                "fanout-label",
                json!({"label": "ecr-pull", "value": "enabled"}),
                none(),
            ),
        );
        plugins.insert(
            "retry-linear".into(),
            registration(
                "retry-linear",
                json!({"step_ms": 2000, "max_ms": 30000, "give_up_after": 3}),
                none(),
            ),
        );
        // Debug builds of the host lower 10,000 records slowly: more time.
        plugins.insert(
            "fanout-label-big".into(),
            registration(
                "fanout-label",
                json!({"label": "ecr-pull", "value": "enabled"}),
                LimitsOverride {
                    fuel: Some(1_000_000_000),
                    timeout_ms: Some(10_000),
                    ..Default::default()
                },
            ),
        );
        // The same loop with fuel to spare: only the deadline stops it.
        plugins.insert(
            "loop-deadline".into(),
            registration(
                "loop-forever",
                json!({}),
                LimitsOverride {
                    fuel: Some(u64::MAX / 2),
                    timeout_ms: Some(50),
                    ..Default::default()
                },
            ),
        );
        let mut bad_pin = registration("naming-prefix", json!({}), none());
        bad_pin.sha256 = "0".repeat(64);
        plugins.insert("bad-pin".into(), bad_pin);
        Policies::with_host(
            &PluginRegistry {
                defaults: LimitsOverride::default(),
                plugins,
                ..Default::default()
            },
            host(),
        )
    })
}

fn cr() -> CrInfo {
    CrInfo {
        name: "ecr-credentials".into(),
        namespace: "apps".into(),
        registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        ..Default::default()
    }
}

fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
    NamespaceInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
    }
}

fn candidates() -> Vec<NamespaceInfo> {
    vec![
        ns("apps", &[("ecr-pull", "enabled")]),
        ns("team-b", &[("ecr-pull", "enabled"), ("team", "b")]),
        ns("team-c", &[("ecr-pull", "disabled")]),
        ns("kube-public", &[("ecr-pull", "enabled")]),
        ns("default", &[]),
    ]
}

fn naming(plugin: &str) -> PolicySelection {
    PolicySelection {
        naming: Some(plugin.into()),
        ..Default::default()
    }
}
fn fanout(plugin: &str) -> PolicySelection {
    PolicySelection {
        fanout: Some(plugin.into()),
        ..Default::default()
    }
}
fn retry(plugin: &str) -> PolicySelection {
    PolicySelection {
        retry: Some(plugin.into()),
        ..Default::default()
    }
}

fn failure(kind: FailureKind, attempt: u32) -> Failure {
    Failure {
        kind,
        message: "boom".into(),
        attempt,
    }
}

async fn good_plugin_still_works(p: &Policies) {
    assert_eq!(
        p.secret_name(&naming("naming-prefix"), &cr(), "apps")
            .await
            .unwrap(),
        "team-a-123456789012-us-east-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_naming_plugin() {
    let p = all_plugins();
    good_plugin_still_works(p).await;
    let loaded = p.plugin("naming-prefix").unwrap();
    assert_eq!(loaded.hooks(), vec![Hook::Naming]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_fanout_plugin() {
    let p = all_plugins();
    let chosen = p
        .select_namespaces(
            &fanout("fanout-label"),
            &cr(),
            &candidates(),
            &AllowedNamespaces::Any,
        )
        .await
        .unwrap();
    assert_eq!(chosen, vec!["apps", "team-b"]);
    // A namespaced resource allowed only its own namespace: the same answer is refused.
    let err = p
        .select_namespaces(
            &fanout("fanout-label"),
            &cr(),
            &candidates(),
            &AllowedNamespaces::own(&cr()),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::Guardrail {
            plugin: "fanout-label".into(),
            hook: Hook::Fanout,
            violation: Violation::NamespaceNotAllowed("team-b".into()),
        }
    );
    assert_eq!(err.metric_label(), "guardrail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_fanout_plugin_over_10000_namespaces() {
    let p = all_plugins();
    let many: Vec<NamespaceInfo> = (0..10_000)
        .map(|i| {
            let v = if i % 2 == 0 { "enabled" } else { "disabled" };
            ns(&format!("ns-{i:05}"), &[("ecr-pull", v), ("team", "x")])
        })
        .collect();
    let chosen = p
        .select_namespaces(
            &fanout("fanout-label-big"),
            &cr(),
            &many,
            &AllowedNamespaces::Any,
        )
        .await
        .unwrap();
    assert_eq!(chosen.len(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_retry_plugin() {
    let p = all_plugins();
    let sel = retry("retry-linear");
    let d = p
        .decide_retry(&sel, &cr(), &failure(FailureKind::Throttled, 3), None)
        .await
        .unwrap();
    assert_eq!(d, RetryDecision::RetryAfter(Duration::from_secs(6)));
    let d = p
        .decide_retry(&sel, &cr(), &failure(FailureKind::Network, 100), None)
        .await
        .unwrap();
    assert_eq!(d, RetryDecision::RetryAfter(Duration::from_secs(30)));
    // Clamped so the retry happens before the token expires (margin 5 min).
    let d = p
        .decide_retry(
            &sel,
            &cr(),
            &failure(FailureKind::Network, 100),
            Some(Duration::from_secs(320)),
        )
        .await
        .unwrap();
    assert_eq!(d, RetryDecision::RetryAfter(Duration::from_secs(20)));
    let d = p
        .decide_retry(&sel, &cr(), &failure(FailureKind::AccessDenied, 3), None)
        .await
        .unwrap();
    assert!(
        matches!(&d, RetryDecision::GiveUp { reason } if reason.contains("access denied 3 times")),
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_runs_out_of_fuel() {
    let p = all_plugins();
    let err = p
        .secret_name(&naming("loop-forever"), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::OutOfFuel {
                fuel: 10_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"loop-forever\"") && err.to_string().contains("naming"),
        "{err}"
    );
    good_plugin_still_works(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    let p = all_plugins();
    let started = Instant::now();
    let err = p
        .select_namespaces(
            &fanout("loop-deadline"),
            &cr(),
            &candidates(),
            &AllowedNamespaces::Any,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::Timeout {
                hook: Hook::Fanout,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    good_plugin_still_works(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    let p = all_plugins();
    let err = p
        .decide_retry(
            &retry("memory-bomb"),
            &cr(),
            &failure(FailureKind::Other, 1),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::MemoryLimit { limit_bytes, hook: Hook::Retry, .. } if limit_bytes == Limits::default().memory_bytes),
        "{err}"
    );
    assert_eq!(err.reason(), "PluginMemoryLimit");
    good_plugin_still_works(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap_with_the_guest_message() {
    let p = all_plugins();
    let err = p
        .secret_name(&naming("trap"), &cr(), "apps")
        .await
        .unwrap_err();
    match &err {
        PolicyError::Trap { message, .. } => {
            assert!(message.contains("deliberate panic in naming"), "{message}")
        }
        other => panic!("{other}"),
    }
    good_plugin_still_works(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_in_host_code_is_refused() {
    let p = all_plugins();
    let started = Instant::now();
    let err = p
        .secret_name(&naming("sleepy"), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Trap { message, .. } if message.contains("may not block")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_name_is_rejected() {
    let p = all_plugins();
    let err = p
        .secret_name(&naming("invalid-name"), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Guardrail { violation: Violation::InvalidName { name, .. }, .. } if name == "Not_A-Valid.Name!"),
        "{err}"
    );
    assert_eq!(err.reason(), "PluginAnswerRejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_outside_candidates_is_rejected() {
    let p = all_plugins();
    let err = p
        .select_namespaces(
            &fanout("outside-candidates"),
            &cr(),
            &candidates(),
            &AllowedNamespaces::Any,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Guardrail { violation: Violation::NotACandidate(n), .. } if n == "kube-system"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_rejected_or_truncated() {
    let p = all_plugins();
    let err = p
        .secret_name(&naming("huge-output"), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PolicyError::Guardrail {
                violation: Violation::OutputTooLarge {
                    len: 1_048_576,
                    max: 253,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    let err = p
        .select_namespaces(
            &fanout("huge-output"),
            &cr(),
            &candidates(),
            &AllowedNamespaces::Any,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PolicyError::Guardrail {
                violation: Violation::OutputTooLarge {
                    len: 500,
                    max: 5,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    let d = p
        .decide_retry(
            &retry("huge-output"),
            &cr(),
            &failure(FailureKind::Other, 1),
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(&d, RetryDecision::GiveUp { reason } if reason.len() < 1200),
        "reason not truncated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_settings_are_reported_on_use() {
    let p = all_plugins();
    let err = p
        .secret_name(&naming("settings-rejected"), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::LoadFailed { error: LoadError::SettingsRejected(m), .. } if m.contains("refuses every settings document")),
        "{err}"
    );
    assert!(
        p.load_errors()
            .iter()
            .any(|(n, _)| *n == "settings-rejected")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_mismatch_is_refused() {
    let p = all_plugins();
    let err = p
        .secret_name(&naming("bad-pin"), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PolicyError::LoadFailed {
                error: LoadError::Sha256Mismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"bad-pin\"") && msg.contains("sha256 mismatch"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_hook_is_a_clear_error() {
    let p = all_plugins();
    let err = p
        .decide_retry(
            &retry("invalid-name"),
            &cr(),
            &failure(FailureKind::Other, 1),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::LoadFailed {
            plugin: "invalid-name".into(),
            hook: Hook::Retry,
            error: LoadError::MissingHook(Hook::Retry),
        }
    );
    assert!(
        err.to_string().contains("does not export the retry hook"),
        "{err}"
    );
    assert!(p.check_selection(&retry("invalid-name")).is_err());
    assert!(p.check_selection(&naming("invalid-name")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_do_not_disturb_concurrent_good_calls() {
    let p = all_plugins();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let bad = ["trap", "memory-bomb", "loop-forever", "huge-output"][i % 4];
        tasks.push(async move {
            let bad_result = p.secret_name(&naming(bad), &cr(), "apps").await;
            let good = p.secret_name(&naming("naming-prefix"), &cr(), "apps").await;
            (bad_result.is_err(), good)
        });
    }
    for (bad_failed, good) in futures::future::join_all(tasks).await {
        assert!(bad_failed);
        assert_eq!(good.unwrap(), "team-a-123456789012-us-east-1");
    }
}

#[test]
fn a_session_is_not_reused_after_a_trap() {
    let p = all_plugins();
    let trap = p.plugin("trap").unwrap();
    let mut s = trap.session();
    assert!(matches!(
        s.secret_name(&cr(), "apps"),
        Err(PolicyError::Trap { .. })
    ));
    let again = s.secret_name(&cr(), "apps").unwrap_err();
    assert!(
        matches!(&again, PolicyError::Internal { message, .. } if message.contains("unusable")),
        "{again}"
    );
    // A warm session of a good plugin serves many calls.
    let good = p.plugin("naming-prefix").unwrap();
    let mut s = good.session();
    for _ in 0..3 {
        assert_eq!(
            s.secret_name(&cr(), "apps").unwrap(),
            "team-a-123456789012-us-east-1"
        );
        assert!(s.last_call().fuel_consumed > 0);
    }
}

#[test]
fn same_file_compiles_once_and_bad_files_are_refused() {
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    let path = plugins::wasm("naming-prefix");
    let sha = plugins::sha256_of(&path);
    for name in ["one", "two"] {
        host.load_file(name, &path, &sha, "{}".into(), Limits::default())
            .unwrap();
    }
    assert_eq!(host.compiled_count(), 1);
    // Not a component.
    let junk = b"\0asm\x01\0\0\0";
    let junk_sha = {
        use sha2::Digest;
        sha2::Sha256::digest(junk)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let err = host
        .load_bytes("junk", junk, &junk_sha, "{}".into(), Limits::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
    // Settings the plugin refuses.
    let err = host
        .load_file(
            "p",
            &path,
            &sha,
            r#"{"prefix":"UPPER"}"#.into(),
            Limits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::SettingsRejected(m) if m.contains("prefix")),
        "{err}"
    );
    // A missing file.
    let err = host
        .load_file(
            "p",
            &path.with_extension("nope"),
            &sha,
            "{}".into(),
            Limits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err}");
}

#[test]
fn registry_file_loads_into_policies() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugins::wasm("naming-prefix");
    std::fs::copy(&wasm, dir.path().join("naming.wasm")).unwrap();
    let file = dir.path().join("plugins.yaml");
    std::fs::write(
        &file,
        format!(
            "plugins:\n  prefixed:\n    path: naming.wasm\n    sha256: {}\n    settings:\n      prefix: ops\n",
            plugins::sha256_of(&wasm)
        ),
    )
    .unwrap();
    let reg = PluginRegistry::load_file(&file).unwrap();
    let p = Policies::with_host(&reg, host());
    assert!(p.load_errors().is_empty(), "{:?}", p.load_errors());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = rt
        .block_on(p.secret_name(&naming("prefixed"), &cr(), "apps"))
        .unwrap();
    assert_eq!(name, "ops-123456789012-us-east-1");
}
