//! `kubectl kustomize config/default` renders, and what it renders grants exactly what the
//! operator calls and runs it locked down.

use std::process::Command;

use serde_json::Value;

fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/default"),
        ])
        .output()
        .expect("kubectl is installed (it renders kustomizations offline)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn granted(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().unwrap().iter().any(|r| {
        let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

#[test]
fn the_default_kustomization_renders_what_the_operator_needs() {
    let objs = rendered();
    let crd = find(&objs, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["name"],
        "ecrtokenrefreshes.ecr.aws.edenlab.io"
    );

    let role = find(&objs, "ClusterRole");
    // Every call the controller makes: watch CRs, patch their status, get/watch/apply
    // Secrets (apply may create), publish Events (create, then patch a series).
    for (group, resource, verbs) in [
        (
            "ecr.aws.edenlab.io",
            "ecrtokenrefreshes",
            &["get", "list", "watch"][..],
        ),
        (
            "ecr.aws.edenlab.io",
            "ecrtokenrefreshes/status",
            &["patch"][..],
        ),
        (
            "",
            "secrets",
            &["get", "list", "watch", "create", "patch"][..],
        ),
        ("events.k8s.io", "events", &["create", "patch"][..]),
    ] {
        for verb in verbs {
            assert!(
                granted(role, group, resource, verb),
                "{verb} {group}/{resource} is not granted"
            );
        }
    }
    // ...and nothing broader: no wildcards, no deletes of the custom resources, no
    // Secret updates beyond patch.
    let text = role.to_string();
    assert!(!text.contains('*'), "wildcard in {text}");
    assert!(!granted(
        role,
        "ecr.aws.edenlab.io",
        "ecrtokenrefreshes",
        "delete"
    ));
    assert!(!granted(role, "", "secrets", "update"));

    let binding = find(&objs, "ClusterRoleBinding");
    let sa = find(&objs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        sa["metadata"]["namespace"]
    );

    let deploy = find(&objs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "run");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
}

#[test]
fn the_sample_is_the_original_operator_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/samples/ecr_v1alpha1_ecrtokenrefresh.yaml"
    ))
    .unwrap();
    let cr: ecr_token_refresh::api::ECRTokenRefresh = serde_yaml::from_str(&text).unwrap();
    let valid = cr.spec.validate().unwrap();
    assert_eq!(valid.registry.account_id, "123456789012");
    assert_eq!(valid.frequency.as_secs(), 8 * 3600);
}
