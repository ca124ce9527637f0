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
            &["get", "list", "watch", "create", "patch", "delete"][..],
        ),
        ("ecr.aws.edenlab.io", "ecrtokenrefreshes", &["patch"][..]),
        ("", "namespaces", &["list", "watch"][..]),
        (
            "",
            "serviceaccounts",
            &["get", "list", "watch", "patch"][..],
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
    assert!(!granted(role, "", "namespaces", "get") && !granted(role, "", "namespaces", "patch"));

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

#[test]
fn leader_election_probes_metrics_and_the_config_file_are_wired() {
    let objs = rendered();
    let deploy = find(&objs, "Deployment");
    let namespace = deploy["metadata"]["namespace"].as_str().unwrap();

    // Leader election: a namespaced Role on Leases in the operator's namespace, exactly
    // the verbs the election uses (get, create, patch), bound to the ServiceAccount.
    let role = find(&objs, "Role");
    assert_eq!(role["metadata"]["namespace"], namespace);
    assert_eq!(role["rules"].as_array().unwrap().len(), 1, "{role}");
    for verb in ["get", "create", "patch"] {
        assert!(
            granted(role, "coordination.k8s.io", "leases", verb),
            "{verb} leases is not granted"
        );
    }
    for verb in ["update", "delete", "list", "watch"] {
        assert!(
            !granted(role, "coordination.k8s.io", "leases", verb),
            "{verb} leases is granted"
        );
    }
    assert!(!role.to_string().contains('*'));
    assert!(
        !find(&objs, "ClusterRole").to_string().contains("leases"),
        "Leases belong in the namespaced Role"
    );
    let binding = find(&objs, "RoleBinding");
    let sa = find(&objs, "ServiceAccount");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], namespace);

    // The config file comes from the generated ConfigMap, parses, validates, and turns
    // leader election on for more than one replica.
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let cm = find(&objs, "ConfigMap");
    let text = cm["data"]["operator.yaml"]
        .as_str()
        .expect("operator.yaml in the ConfigMap");
    let config: ecr_token_refresh::config::OperatorConfig = serde_yaml::from_str(text).unwrap();
    config.validate().unwrap();
    assert!(deploy["spec"]["replicas"].as_i64().unwrap() >= 2);
    assert!(
        config.leader_election.enabled,
        "several replicas need leader election"
    );
    assert_eq!(
        config.leader_election.lease_namespace, None,
        "the Lease goes to POD_NAMESPACE"
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("a volume from the config ConfigMap");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    let path = format!("{}/operator.yaml", mount["mountPath"].as_str().unwrap());
    assert_eq!(c["args"], serde_json::json!(["run", "--config", path]));
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    // Probes and metrics on the port the config listens on.
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("an http port");
    assert_eq!(
        port["containerPort"].as_u64().unwrap(),
        u64::from(config.server.listen.port())
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    let svc = find(&objs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );

    // Plugins come from a read-only volume; resources are bounded.
    let plugins = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "plugins")
        .expect("a plugins mount");
    assert_eq!(plugins["readOnly"], true);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
}
