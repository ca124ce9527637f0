//! `plugin test`: runs a plugin's hooks on a YAML case and reports each decision.

#[path = "common/plugins.rs"]
mod plugins;

use ecr_token_refresh::policy::testcmd::{self, PluginTestArgs};

fn args(crate_name: &str) -> PluginTestArgs {
    PluginTestArgs {
        wasm: plugins::wasm(crate_name),
        case: plugins::repo_root().join("plugins/examples/case.yaml"),
        settings: None,
        sha256: None,
        fuel: None,
        timeout_ms: None,
        memory_bytes: None,
    }
}

#[test]
fn prints_the_fanout_decision_for_the_example_case() {
    let r = testcmd::report(&args("fanout-label")).unwrap();
    println!("{}", r.text);
    assert_eq!(r.failures, 0, "{}", r.text);
    assert!(r.text.contains("exports [fanout]"), "{}", r.text);
    assert!(
        r.text
            .contains(r#"fanout: 2 of 5 candidates: ["apps", "team-b"]"#),
        "{}",
        r.text
    );
    assert!(r.text.contains("fuel "), "{}", r.text);
}

#[test]
fn one_case_gives_the_decisions_of_all_three_example_plugins() {
    let naming = testcmd::report(&args("naming-prefix")).unwrap();
    assert_eq!(naming.failures, 0, "{}", naming.text);
    assert!(
        naming
            .text
            .contains(r#"naming: secret name in "apps" = "team-123456789012-us-east-1""#),
        "{}",
        naming.text
    );
    let fanout = testcmd::report(&args("fanout-label")).unwrap();
    assert_eq!(fanout.failures, 0, "{}", fanout.text);
    let retry = testcmd::report(&args("retry-linear")).unwrap();
    assert_eq!(retry.failures, 0, "{}", retry.text);
    // step 2 s × attempt 2 of the case's failure.
    assert!(
        retry.text.contains("retry: retry after 4s"),
        "{}",
        retry.text
    );
}

#[test]
fn prints_naming_and_retry_decisions_with_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("settings.yaml");
    std::fs::write(&s, "prefix: team-a\n").unwrap();
    let r = testcmd::report(&PluginTestArgs {
        settings: Some(s),
        ..args("naming-prefix")
    })
    .unwrap();
    assert!(
        r.text
            .contains(r#"naming: secret name in "apps" = "team-a-123456789012-us-east-1""#),
        "{}",
        r.text
    );

    std::fs::write(dir.path().join("retry.yaml"), "step_ms: 1500\n").unwrap();
    let r = testcmd::report(&PluginTestArgs {
        settings: Some(dir.path().join("retry.yaml")),
        ..args("retry-linear")
    })
    .unwrap();
    assert!(r.text.contains("retry: retry after 3s"), "{}", r.text);
}

#[test]
fn reports_failures_and_limits() {
    let r = testcmd::report(&PluginTestArgs {
        fuel: Some(1_000_000),
        ..args("loop-forever")
    })
    .unwrap();
    assert_eq!(r.failures, 3, "{}", r.text);
    assert!(r.text.contains("[PluginOutOfFuel]"), "{}", r.text);
    assert!(r.text.contains("fuel 1000000 per call"), "{}", r.text);

    let r = testcmd::report(&args("invalid-name")).unwrap();
    assert!(r.text.contains("[guardrail] answer rejected"), "{}", r.text);

    let r = testcmd::report(&PluginTestArgs {
        sha256: Some("0".repeat(64)),
        ..args("naming-prefix")
    })
    .unwrap();
    assert!(
        r.text.contains("load:     FAILED: sha256 mismatch"),
        "{}",
        r.text
    );
    assert!(
        testcmd::run(PluginTestArgs {
            sha256: Some("0".repeat(64)),
            ..args("naming-prefix")
        })
        .is_err()
    );
}
