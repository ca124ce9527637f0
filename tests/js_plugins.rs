//! The JavaScript example plugins (`plugins/js`, componentize-qjs): `plugin test` gives
//! them the decisions of the Rust examples, the JS mapping of the WIT types is the one
//! `plugins/README.md` documents, and they load and run under the host's default limits
//! (pooling allocator included) with headroom.

#[path = "common/js_plugins.rs"]
mod js_plugins;
#[path = "common/plugins.rs"]
mod plugins;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ecr_token_refresh::policy::testcmd::{self, PluginTestArgs};
use ecr_token_refresh::policy::{
    CrInfo, Failure, FailureKind, HostConfig, Limits, LoadError, LoadedPlugin, NamespaceInfo,
    PluginHost, PolicyError, RetryDecision,
};
use js_plugins::js_wasm;
use serde_json::{Value, json};

/// The examples: (JavaScript source name, Rust crate name).
const EXAMPLES: [(&str, &str); 3] = [
    ("naming-prefix", "naming-prefix"),
    ("fanout-label", "fanout-label"),
    ("retry-linear", "retry-linear"),
];

fn example_case() -> PathBuf {
    plugins::repo_root().join("plugins/examples/case.yaml")
}

fn test_args(wasm: PathBuf, case: &Path) -> PluginTestArgs {
    PluginTestArgs {
        wasm,
        case: case.to_owned(),
        settings: None,
        sha256: None,
        fuel: None,
        timeout_ms: None,
        memory_bytes: None,
    }
}

/// The lines of a `plugin test` report that carry decisions (load outcome and each
/// hook's answer), without the fuel and time each call took.
fn decisions(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| {
            ["load:", "naming:", "fanout:", "retry:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| match l.rfind("  (fuel ") {
            Some(i) => l[..i].to_owned(),
            None => l.to_owned(),
        })
        .collect()
}

/// Runs `plugin test` on the JS and the Rust build of each example with `case` and
/// checks that they decide alike (the same decisions, or failures in the same places
/// when `failing`, whose messages differ); returns the JS reports by example. `only`
/// names the examples to run (empty: all).
fn js_and_rust_agree(case: &Path, failing: bool, only: &[&str]) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    for (js, rust) in EXAMPLES {
        if !only.is_empty() && !only.contains(&js) {
            continue;
        }
        let j = testcmd::report(&test_args(js_wasm(js), case)).unwrap();
        let r = testcmd::report(&test_args(plugins::wasm(rust), case)).unwrap();
        assert_eq!(j.failures, r.failures, "JS:\n{}\nRust:\n{}", j.text, r.text);
        let (dj, dr) = (decisions(&j.text), decisions(&r.text));
        if failing {
            assert!(j.failures > 0, "{}", j.text);
            let failed = |d: &[String]| d.iter().map(|l| l.contains("FAILED")).collect::<Vec<_>>();
            assert_eq!(
                failed(&dj),
                failed(&dr),
                "JS:\n{}\nRust:\n{}",
                j.text,
                r.text
            );
        } else {
            assert_eq!(dj, dr, "JS:\n{}\nRust:\n{}", j.text, r.text);
        }
        assert!(dj.len() >= 2 || failing, "{}", j.text);
        out.insert(js, j.text);
    }
    out
}

#[test]
fn plugin_test_gives_the_js_examples_the_decisions_of_the_rust_examples() {
    let js = js_and_rust_agree(&example_case(), false, &[]);
    for text in js.values() {
        assert!(text.contains("load:     ok, settings accepted"), "{text}");
        assert!(!text.contains("FAILED"), "{text}");
    }
    assert!(
        js["naming-prefix"]
            .contains(r#"naming: secret name in "apps" = "team-123456789012-us-east-1""#),
        "{}",
        js["naming-prefix"]
    );
    assert!(
        js["fanout-label"].contains(r#"fanout: 2 of 5 candidates: ["apps", "team-b"]"#),
        "{}",
        js["fanout-label"]
    );
    assert!(
        js["retry-linear"].contains("retry: retry after 4s"),
        "{}",
        js["retry-linear"]
    );

    // Other settings and inputs: a label without a value, the give-up branch, a cap.
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case.yaml");
    let base: Value =
        serde_yaml::from_str(&std::fs::read_to_string(example_case()).unwrap()).unwrap();
    let variant = |patch: Value, failing: bool, only: &[&str]| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        std::fs::write(&case, serde_yaml::to_string(&c).unwrap()).unwrap();
        js_and_rust_agree(&case, failing, only)
    };
    let js = variant(
        json!({
            "settingsByPlugin": {
                "naming_prefix": {},
                "fanout_label": {"label": "ecr-pull"},
                "retry_linear": {"step_ms": 20000, "max_ms": 30000, "give_up_after": 3},
            },
            "failure": {"kind": "network", "message": "timed out", "attempt": 7},
        }),
        false,
        &[],
    );
    assert!(
        js["naming-prefix"].contains(r#"= "ecr-123456789012-us-east-1""#),
        "{}",
        js["naming-prefix"]
    );
    assert!(
        js["fanout-label"].contains(r#"3 of 5 candidates: ["apps", "team-b", "team-c"]"#),
        "{}",
        js["fanout-label"]
    );
    assert!(
        js["retry-linear"].contains("retry: retry after 30s"),
        "{}",
        js["retry-linear"]
    );

    let js = variant(
        json!({
            "failure": {"kind": "access-denied", "message": "not authorized", "attempt": 3},
        }),
        false,
        &["retry-linear"],
    );
    assert!(
        js["retry-linear"].contains("give up: access denied 3 times in a row: not authorized"),
        "{}",
        js["retry-linear"]
    );

    // Settings both refuse (the messages differ in detail: serde's vs the JS checks).
    let js = variant(
        json!({
            "settingsByPlugin": {
                "naming_prefix": {"prefix": "Team"},
                "fanout_label": {"label": ""},
                "retry_linear": {"step_ms": 0},
            },
        }),
        true,
        &[],
    );
    for text in js.values() {
        assert!(
            text.contains("load:     FAILED: settings rejected by the plugin: invalid settings:"),
            "{text}"
        );
    }
}

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new(HostConfig::default()).expect("plugin host"))
}

fn load(name: &str, settings: Value, limits: Limits) -> Result<LoadedPlugin, LoadError> {
    let path = js_wasm(name);
    host().load_file(
        name,
        &path,
        &plugins::sha256_of(&path),
        settings.to_string(),
        limits,
    )
}

fn cr() -> CrInfo {
    CrInfo {
        name: "pull".into(),
        namespace: "apps".into(),
        labels: BTreeMap::from([("team".into(), "platform".into())]),
        annotations: BTreeMap::new(),
        registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        parameters: BTreeMap::from([("tier".into(), "gold".into())]),
    }
}

fn failure() -> Failure {
    Failure {
        kind: FailureKind::AccessDenied,
        message: "not authorized".into(),
        attempt: 2,
    }
}

fn candidates(n: usize) -> Vec<NamespaceInfo> {
    (0..n)
        .map(|i| NamespaceInfo {
            name: format!("ns-{i}"),
            labels: BTreeMap::from([(
                "ecr-pull".into(),
                if i % 2 == 0 { "enabled" } else { "disabled" }.into(),
            )]),
            annotations: BTreeMap::from([("owner".into(), format!("team-{i}"))]),
        })
        .collect()
}

/// What the probe's `decide` answers in `mode`.
fn probe_decide(mode: &str, expires: Option<Duration>) -> Result<RetryDecision, PolicyError> {
    let p = load("mapping-probe", json!({"mode": mode}), Limits::default()).unwrap();
    let mut s = p.session();
    s.decide_retry(&cr(), &failure(), expires)
}

#[test]
fn the_js_mapping_is_the_one_plugins_readme_documents() {
    let probe = load("mapping-probe", json!({}), Limits::default()).unwrap();

    // Records: camelCase keys; list<tuple<string, string>>: arrays of [key, value].
    let got: Value =
        serde_json::from_str(&probe.session().secret_name(&cr(), "team-b").unwrap()).unwrap();
    assert_eq!(
        got["keys"],
        json!([
            "name",
            "namespace",
            "labels",
            "annotations",
            "registry",
            "accountId",
            "region",
            "parameters"
        ])
    );
    assert_eq!(got["accountId"], "123456789012");
    assert_eq!(got["labels"], json!([["team", "platform"]]));
    assert_eq!(
        (got["labelsKind"].as_str(), got["firstLabelKind"].as_str()),
        (Some("array"), Some("array"))
    );
    assert_eq!(got["targetNamespace"], "team-b");

    let got = probe
        .session()
        .select_namespaces(&cr(), &candidates(2))
        .unwrap();
    let got: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(
        got,
        json!({"kind": "array", "first": {"name": "ns-0", "labels": [["ecr-pull", "enabled"]], "annotations": [["owner", "team-0"]]}})
    );

    // Enums: the case name as a string; u32 and u64: numbers; option: the value or null;
    // variants: {tag, val} with the WIT case name as tag.
    let describe = |expires| match probe_decide("describe", expires).unwrap() {
        RetryDecision::GiveUp { reason } => serde_json::from_str::<Value>(&reason).unwrap(),
        other => panic!("{other:?}"),
    };
    let got = describe(Some(Duration::from_secs(3600)));
    assert_eq!(
        got,
        json!({"failure": {"kind": "access-denied", "message": "not authorized", "attempt": 2},
               "attemptKind": "number", "expires": 3600, "expiresKind": "number"})
    );
    let got = describe(None);
    assert_eq!(
        (&got["expires"], &got["expiresKind"]),
        (&json!(null), &json!("null"))
    );

    // u64 answers: a JS number, exact up to 2^53 (a BigInt traps).
    assert_eq!(
        probe_decide("number", None).unwrap(),
        RetryDecision::RetryAfter(Duration::from_millis(1 << 53))
    );
    match probe_decide("bigint", None) {
        Err(PolicyError::Trap { message, .. }) => {
            assert!(message.contains("expected number"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // result<_, string>: a thrown string is `err`, the plugin's own message.
    match probe_decide("throw-string", None) {
        Err(PolicyError::Guest { message, .. }) => assert_eq!(message, "no decision"),
        other => panic!("{other:?}"),
    }
    match load(
        "mapping-probe",
        json!({"reject": "wrong"}),
        Limits::default(),
    ) {
        Err(LoadError::SettingsRejected(m)) => assert_eq!(m, "rejected: wrong"),
        other => panic!("{other:?}"),
    }
    // A thrown Error is `err` with its message.
    match probe_decide("throw-error", None) {
        Err(PolicyError::Guest { message, .. }) => assert_eq!(message, "boom"),
        other => panic!("{other:?}"),
    }
    // An answer of the wrong shape traps.
    match probe_decide("return-string", None) {
        Err(PolicyError::Trap { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn js_examples_load_and_run_under_the_default_limits_with_headroom() {
    let defaults = Limits::default();
    assert!(
        host().is_pooling(),
        "the default host uses the pooling allocator"
    );
    let naming = load("naming-prefix", json!({"prefix": "team"}), defaults).unwrap();
    let fanout = load(
        "fanout-label",
        json!({"label": "ecr-pull", "value": "enabled"}),
        defaults,
    )
    .unwrap();
    let retry = load("retry-linear", json!({}), defaults).unwrap();

    // Fuel: a naming, retry or 5-candidate fan-out call uses under a twentieth of the budget.
    let mut s = naming.session();
    assert_eq!(
        s.secret_name(&cr(), "apps").unwrap(),
        "team-123456789012-us-east-1"
    );
    let used = s.last_call().fuel_consumed;
    assert!(used * 20 < defaults.fuel, "naming used {used} fuel");
    let mut s = retry.session();
    assert_eq!(
        s.decide_retry(&cr(), &failure(), None).unwrap(),
        RetryDecision::RetryAfter(Duration::from_secs(10))
    );
    let used = s.last_call().fuel_consumed;
    assert!(used * 20 < defaults.fuel, "retry used {used} fuel");
    let mut s = fanout.session();
    assert_eq!(
        s.select_namespaces(&cr(), &candidates(5)).unwrap(),
        ["ns-0", "ns-2", "ns-4"]
    );
    let used = s.last_call().fuel_consumed;
    assert!(used * 20 < defaults.fuel, "fan-out used {used} fuel");

    // A 1,000-candidate fan-out fits the default fuel budget (which grows per candidate)
    // with room to spare. (Its time is measured in release builds, see
    // plugins/README.md: here the host is a debug build on a shared machine.)
    let many = candidates(1000);
    let patient = load(
        "fanout-label",
        json!({"label": "ecr-pull", "value": "enabled"}),
        Limits {
            timeout: Duration::from_secs(10),
            ..defaults
        },
    )
    .unwrap();
    let mut s = patient.session();
    assert_eq!(s.select_namespaces(&cr(), &many).unwrap().len(), 500);
    let used = s.last_call().fuel_consumed;
    let budget = defaults.fuel + defaults.fuel_per_candidate * 1000;
    assert!(
        used * 2 < budget,
        "1,000 candidates used {used} of {budget} fuel"
    );

    // Memory: each plugin also runs with a quarter of the default memory limit.
    let quarter = Limits {
        memory_bytes: defaults.memory_bytes / 4,
        ..defaults
    };
    let small = load(
        "fanout-label",
        json!({"label": "ecr-pull"}),
        Limits {
            timeout: Duration::from_secs(10),
            ..quarter
        },
    )
    .unwrap();
    assert_eq!(
        small
            .session()
            .select_namespaces(&cr(), &many)
            .unwrap()
            .len(),
        1000
    );
    let small = load("naming-prefix", json!({}), quarter).unwrap();
    assert!(small.session().secret_name(&cr(), "apps").is_ok());
}

#[test]
fn the_default_pool_holds_as_many_js_instances_as_it_allows_instances() {
    // A host of its own: the other tests' sessions would take from a shared pool.
    let host = PluginHost::new(HostConfig::default()).unwrap();
    assert!(host.is_pooling());
    let path = js_wasm("naming-prefix");
    let plugin = host
        .load_file(
            "naming-prefix",
            &path,
            &plugins::sha256_of(&path),
            "{}".into(),
            Limits::default(),
        )
        .unwrap();
    // Each JS instance takes 9 core instances, 2 memories and 2 tables from the pool
    // (with 8 core instances per plugin instance, as before, only 56 fit).
    let mut sessions = Vec::new();
    for i in 0..host.config().max_instances {
        let mut s = plugin.session();
        let answer = s.secret_name(&cr(), "apps");
        assert_eq!(
            answer.as_deref(),
            Ok("ecr-123456789012-us-east-1"),
            "instance {i} of {}",
            host.config().max_instances
        );
        sessions.push(s);
    }
}

/// The operator's compiler child (`compile-plugin --max-memory`) on the largest example:
/// within the default limit it compiles; under the smallest limit the config accepts
/// (64 MiB; compiling it peaks near 100 MiB) the allocation that crosses the limit fails
/// and the child ends with the runtime's message, which the operator reports as
/// `policy.compile_memory_bytes`.
#[test]
fn the_compiler_child_keeps_to_its_memory_limit() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let wasm = std::fs::read(js_wasm("fanout-label")).unwrap();
    let compile = |limit: u64| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"))
            .args(["compile-plugin", "--max-bytes", "33554432", "--max-memory"])
            .arg(limit.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&wasm).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            out.stdout.len(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, artifact, err) = compile(HostConfig::default().compile_memory_bytes);
    assert!(ok && artifact > 0, "{err}");
    let (ok, artifact, err) = compile(ecr_token_refresh::policy::MIN_COMPILE_MEMORY);
    assert!(!ok && artifact == 0);
    assert!(err.contains("memory allocation of"), "{err}");
}
