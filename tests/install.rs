//! The install overlays render with `kubectl kustomize`, and what they render grants
//! exactly what the operator calls, runs it locked down, and fences its writes with
//! ValidatingAdmissionPolicies whose CEL is evaluated here against sample requests.
//!
//! - `config/default`: the cluster-wide operator (ClusterRole).
//! - `config/namespaced`: the operator confined to the one namespace it is installed into
//!   (Roles only, `watch.namespaces` set, policies bound to that namespace).

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use kube::Resource;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Rendering and finding objects
// ---------------------------------------------------------------------------------------

/// `kubectl kustomize config/<overlay>`, one JSON value per rendered object.
fn render(overlay: &str) -> Vec<Value> {
    let dir = format!("{}/config/{overlay}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .args(["kustomize", &dir])
        .output()
        .expect("kubectl is installed (it renders kustomizations offline)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn all_of<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(objs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}: {found:?}");
    found[0]
}

/// The object of `kind` whose rendered name ends with `suffix` (the name before the
/// namePrefix, optionally followed by more).
fn named<'a>(objs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    objs.iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} named *{suffix} rendered"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

// ---------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------

/// One grant: (API group, resource, verb).
type Grant = (String, String, String);

/// The calls the operator makes (group, resource, verbs), whatever its scope.
const OPERATOR_CALLS: &[(&str, &str, &[&str])] = &[
    // The controller; patch adds and removes the cleanup finalizer.
    (
        "ecr.aws.edenlab.io",
        "ecrtokenrefreshes",
        &["list", "watch", "patch"],
    ),
    // Status: merge patch only.
    ("ecr.aws.edenlab.io", "ecrtokenrefreshes/status", &["patch"]),
    (
        "",
        "secrets",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("", "serviceaccounts", &["list", "watch", "patch"]),
    // Web identity: ServiceAccount tokens from the TokenRequest API.
    ("", "serviceaccounts/token", &["create"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// Fan-out candidates: only the cluster-wide operator reads Namespaces.
const NAMESPACE_CALLS: (&str, &str, &[&str]) = ("", "namespaces", &["list", "watch"]);

/// Leader election, in the operator's own namespace.
const LEASE_CALLS: (&str, &str, &[&str]) =
    ("coordination.k8s.io", "leases", &["get", "create", "patch"]);

fn expand(calls: &[(&str, &str, &[&str])]) -> BTreeSet<Grant> {
    calls
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(|v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

/// Every (group, resource, verb) a Role or ClusterRole grants. Refuses what this
/// expansion cannot express exactly: wildcards, resourceNames, nonResourceURLs.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let text = role.to_string();
    assert!(!text.contains('*'), "wildcard in {text}");
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap_or_else(|| panic!("{k} in {rule}"))
                .iter()
                .map(|x| str_of(x, k).to_string())
                .collect()
        };
        for g in list("apiGroups") {
            for r in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

/// The differences between what is granted and what is expected, for a readable failure.
fn assert_grants(what: &str, granted: &BTreeSet<Grant>, expected: &BTreeSet<Grant>) {
    let missing: Vec<_> = expected.difference(granted).collect();
    let extra: Vec<_> = granted.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, not called but granted {extra:?}"
    );
}

/// The workload that runs the operator (the Deployment, or the CronJob of
/// config/cronjob) and its pod spec.
fn workload(objs: &[Value]) -> (&Value, &Value) {
    match all_of(objs, "Deployment").as_slice() {
        [deploy] => (deploy, &deploy["spec"]["template"]["spec"]),
        [] => {
            let cron = find(objs, "CronJob");
            (
                cron,
                &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            )
        }
        many => panic!("more than one Deployment: {many:?}"),
    }
}

/// The ServiceAccount the operator runs as, checked against the Deployment (or CronJob).
fn operator_account(objs: &[Value]) -> (&str, &str) {
    let sa = find(objs, "ServiceAccount");
    let (workload, pod) = workload(objs);
    let name = str_of(&sa["metadata"]["name"], "ServiceAccount name");
    let namespace = str_of(&sa["metadata"]["namespace"], "ServiceAccount namespace");
    assert_eq!(pod["serviceAccountName"], name);
    assert_eq!(workload["metadata"]["namespace"], namespace);
    (namespace, name)
}

/// Every binding subject is the operator's ServiceAccount, and every roleRef resolves.
fn assert_bound_to_operator(objs: &[Value]) {
    let (namespace, name) = operator_account(objs);
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        for binding in all_of(objs, kind) {
            let subjects = binding["subjects"].as_array().unwrap();
            assert_eq!(subjects.len(), 1, "{binding}");
            assert_eq!(subjects[0]["kind"], "ServiceAccount");
            assert_eq!(subjects[0]["name"], name);
            assert_eq!(subjects[0]["namespace"], namespace);
            let role_kind = str_of(&binding["roleRef"]["kind"], "roleRef.kind");
            let role = all_of(objs, role_kind)
                .into_iter()
                .find(|r| r["metadata"]["name"] == binding["roleRef"]["name"])
                .unwrap_or_else(|| panic!("{binding} refers to a {role_kind} not rendered"));
            if kind == "RoleBinding" {
                assert_eq!(binding["metadata"]["namespace"], namespace);
                assert_eq!(role["metadata"]["namespace"], namespace);
            }
        }
    }
}

/// Every role the operator is bound to, together, grants exactly `expected`.
fn assert_total_grants(objs: &[Value], expected: &BTreeSet<Grant>) {
    let mut total = BTreeSet::new();
    for kind in ["Role", "ClusterRole"] {
        for role in all_of(objs, kind) {
            total.extend(grants(role));
        }
    }
    assert_grants("all roles together", &total, expected);
    assert!(!total.contains(&("".into(), "secrets".into(), "update".into())));
}

#[test]
fn the_cluster_wide_install_grants_exactly_what_the_operator_calls() {
    let objs = render("default");
    let crd = find(&objs, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["name"],
        "ecrtokenrefreshes.ecr.aws.edenlab.io"
    );

    let mut calls = OPERATOR_CALLS.to_vec();
    calls.push(NAMESPACE_CALLS);
    let role = find(&objs, "ClusterRole");
    assert_grants("ClusterRole", &grants(role), &expand(&calls));
    let binding = find(&objs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);

    let leases = find(&objs, "Role");
    assert_grants(
        "leader election Role",
        &grants(leases),
        &expand(&[LEASE_CALLS]),
    );

    calls.push(LEASE_CALLS);
    assert_total_grants(&objs, &expand(&calls));
    assert_bound_to_operator(&objs);
    assert_eq!(all_of(&objs, "RoleBinding").len(), 1);
}

#[test]
fn the_namespaced_install_grants_the_same_in_its_namespace_only() {
    let objs = render("namespaced");
    let (namespace, _) = operator_account(&objs);
    assert!(all_of(&objs, "ClusterRole").is_empty());
    assert!(all_of(&objs, "ClusterRoleBinding").is_empty());
    // The namespace is the team's: the overlay neither creates nor deletes it.
    assert!(all_of(&objs, "Namespace").is_empty());
    // The CRD is still there (cluster-scoped, applied by a cluster admin).
    find(&objs, "CustomResourceDefinition");
    for obj in &objs {
        let kind = str_of(&obj["kind"], "kind");
        let cluster_scoped = matches!(
            kind,
            "CustomResourceDefinition"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        );
        if cluster_scoped {
            assert!(obj["metadata"].get("namespace").is_none(), "{obj}");
        } else {
            assert_eq!(obj["metadata"]["namespace"], namespace, "{obj}");
        }
    }

    let role = named(&objs, "Role", "-manager-role");
    assert_grants("manager Role", &grants(role), &expand(OPERATOR_CALLS));
    let leases = named(&objs, "Role", "-leader-election-role");
    assert_grants(
        "leader election Role",
        &grants(leases),
        &expand(&[LEASE_CALLS]),
    );
    assert_eq!(all_of(&objs, "Role").len(), 2);
    assert_eq!(all_of(&objs, "RoleBinding").len(), 2);
    let binding = named(&objs, "RoleBinding", "-manager-rolebinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);

    let mut calls = OPERATOR_CALLS.to_vec();
    calls.push(LEASE_CALLS);
    assert_total_grants(&objs, &expand(&calls));
    assert_bound_to_operator(&objs);
}

#[test]
fn no_finalizers_permission_because_the_owner_reference_does_not_block_deletion() {
    // OwnerReferencesPermissionEnforcement asks for `update` on
    // `ecrtokenrefreshes/finalizers` only from whoever sets `blockOwnerDeletion: true`.
    // The Secret in the resource's own namespace points back with kube's
    // `controller_owner_ref`, which leaves it unset. If this starts failing, grant
    // `update` on `ecrtokenrefreshes/finalizers` in both overlays and in OPERATOR_CALLS.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/samples/ecr_v1alpha1_ecrtokenrefresh.yaml"
    ))
    .unwrap();
    let mut cr: ecr_token_refresh::api::ECRTokenRefresh = serde_yaml::from_str(&text).unwrap();
    cr.meta_mut().namespace = Some("apps".into());
    cr.meta_mut().uid = Some("6f1e2d3c-0000-4000-8000-000000000001".into());
    let owner = cr.controller_owner_ref(&()).unwrap();
    assert_eq!(owner.controller, Some(true));
    assert_ne!(owner.block_owner_deletion, Some(true));

    for overlay in ["default", "namespaced"] {
        let objs = render(overlay);
        for kind in ["Role", "ClusterRole"] {
            for role in all_of(&objs, kind) {
                assert!(
                    !role.to_string().contains("ecrtokenrefreshes/finalizers"),
                    "{overlay}: {role}"
                );
            }
        }
    }
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
fn the_multi_registry_sample_is_valid_and_names_four_registries_and_a_role() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/samples/ecr_v1alpha1_ecrtokenrefresh_multi.yaml"
    ))
    .unwrap();
    let cr: ecr_token_refresh::api::ECRTokenRefresh = serde_yaml::from_str(&text).unwrap();
    let valid = cr.spec.validate().unwrap();
    let hosts: Vec<String> = valid
        .registries()
        .iter()
        .map(|r| r.host().to_string())
        .collect();
    assert_eq!(hosts.len(), 4, "{hosts:?}");
    assert!(hosts.contains(&"public.ecr.aws".to_string()));
    assert!(matches!(
        valid.identity("apps"),
        ecr_token_refresh::ecr::Identity::Role {
            external_id: Some(_),
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------
// Deployment, probes, config
// ---------------------------------------------------------------------------------------

/// The operator config in the rendered ConfigMap, parsed and validated.
fn rendered_config(objs: &[Value]) -> (ecr_token_refresh::config::OperatorConfig, &str) {
    let cm = find(objs, "ConfigMap");
    let text = str_of(
        &cm["data"]["operator.yaml"],
        "operator.yaml in the ConfigMap",
    );
    let config: ecr_token_refresh::config::OperatorConfig = serde_yaml::from_str(text).unwrap();
    config.validate().unwrap();
    (config, text)
}

/// The Deployment runs locked down, with leader election, probes, metrics, the config file
/// and the plugins volume wired; the same in both overlays.
fn assert_deployment_wired(objs: &[Value]) {
    let deploy = find(objs, "Deployment");
    let namespace = str_of(&deploy["metadata"]["namespace"], "Deployment namespace");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");

    // Leader election: the Lease Role lives in the operator's namespace.
    let leases = named(objs, "Role", "-leader-election-role");
    assert_eq!(leases["metadata"]["namespace"], namespace);
    let binding = named(objs, "RoleBinding", "-leader-election-rolebinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], leases["metadata"]["name"]);

    // The config file comes from the generated ConfigMap, parses, validates, and turns
    // leader election on for more than one replica.
    let (config, _) = rendered_config(objs);
    let cm = find(objs, "ConfigMap");
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
    let path = format!("{}/operator.yaml", str_of(&mount["mountPath"], "mountPath"));
    assert_eq!(c["args"], json!(["run", "--config", path]));
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
    let svc = find(objs, "Service");
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

#[test]
fn leader_election_probes_metrics_and_the_config_file_are_wired() {
    let objs = render("default");
    assert_deployment_wired(&objs);
    let (config, _) = rendered_config(&objs);
    assert!(
        config.watch.namespaces.is_empty(),
        "the cluster-wide operator watches every namespace"
    );
}

#[test]
fn the_namespaced_install_runs_the_same_deployment_watching_its_namespace() {
    let objs = render("namespaced");
    assert_deployment_wired(&objs);
    let (namespace, _) = operator_account(&objs);
    let (config, text) = rendered_config(&objs);
    assert_eq!(config.watch.namespaces, [namespace]);

    // ...and otherwise the cluster-wide install's config, key for key.
    let default_objs = render("default");
    let (_, default_text) = rendered_config(&default_objs);
    let mut ours: Value = serde_yaml::from_str(text).unwrap();
    let theirs: Value = serde_yaml::from_str(default_text).unwrap();
    ours.as_object_mut().unwrap().remove("watch");
    assert_eq!(ours, theirs);

    // The same Deployment (only names and namespaces differ).
    let strip = |d: &Value| {
        let mut d = d.clone();
        d["metadata"]["namespace"] = Value::Null;
        for v in d["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
        {
            if v.get("configMap").is_some() {
                v["configMap"]["name"] = Value::Null;
            }
        }
        d
    };
    assert_eq!(
        strip(find(&objs, "Deployment")),
        strip(find(&default_objs, "Deployment"))
    );
}

#[test]
fn the_multi_namespace_install_grants_the_same_in_each_watched_namespace_and_no_other() {
    let objs = render("multi-namespace");
    let (home, account) = operator_account(&objs);
    assert!(all_of(&objs, "ClusterRole").is_empty());
    assert!(all_of(&objs, "ClusterRoleBinding").is_empty());
    assert!(all_of(&objs, "Namespace").is_empty());
    let (config, _) = rendered_config(&objs);
    assert!(
        config.watch.namespaces.len() >= 2,
        "{:?}",
        config.watch.namespaces
    );
    assert_eq!(config.watch.namespaces[0], home);

    // One manager Role per watched namespace, each granting what the operator calls there
    // (no Namespaces: it does not fan out), each bound to the operator's account.
    let roles: Vec<&Value> = all_of(&objs, "Role")
        .into_iter()
        .filter(|r| str_of(&r["metadata"]["name"], "name").ends_with("-manager-role"))
        .collect();
    let mut role_namespaces: Vec<&str> = roles
        .iter()
        .map(|r| str_of(&r["metadata"]["namespace"], "Role namespace"))
        .collect();
    role_namespaces.sort();
    let mut watched: Vec<&str> = config.watch.namespaces.iter().map(String::as_str).collect();
    watched.sort();
    assert_eq!(
        role_namespaces, watched,
        "a Role in each watched namespace, and no other"
    );
    for role in &roles {
        let ns = &role["metadata"]["namespace"];
        assert_grants(
            &format!("manager Role in {ns}"),
            &grants(role),
            &expand(OPERATOR_CALLS),
        );
        let binding = all_of(&objs, "RoleBinding")
            .into_iter()
            .find(|b| {
                &b["metadata"]["namespace"] == ns
                    && b["roleRef"]["name"] == role["metadata"]["name"]
            })
            .unwrap_or_else(|| panic!("no RoleBinding of the manager Role in {ns}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": home}]),
            "{binding}"
        );
    }
    // Leases only in the operator's own namespace.
    let leases = named(&objs, "Role", "-leader-election-role");
    assert_eq!(leases["metadata"]["namespace"], home);

    // The admission policies fence its writes in every watched namespace.
    assert_admission_rendered(&objs);
    for binding in all_of(&objs, "ValidatingAdmissionPolicyBinding") {
        let values = &binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
            ["values"];
        assert_eq!(values, &json!(config.watch.namespaces), "{binding}");
    }
    // The same Deployment as config/namespaced, reading this config.
    assert_deployment_wired(&objs);
}

// ---------------------------------------------------------------------------------------
// CronJob (`ecr-token-refresh once`)
// ---------------------------------------------------------------------------------------

fn kubectl_present() -> bool {
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok()
}

#[test]
fn the_cronjob_install_runs_once_every_six_hours_like_the_controller_runs() {
    if !kubectl_present() {
        eprintln!(
            "SKIPPED: kubectl is not installed; `kubectl kustomize config/cronjob` cannot be checked"
        );
        return;
    }
    let objs = render("cronjob");
    // No controller: no Deployment, no metrics Service.
    assert!(all_of(&objs, "Deployment").is_empty());
    assert!(all_of(&objs, "Service").is_empty());
    let cron = find(&objs, "CronJob");
    assert_eq!(cron["apiVersion"], "batch/v1");
    assert_eq!(cron["spec"]["schedule"], "0 */6 * * *");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);

    // `once`, with the config file from the generated ConfigMap, refreshing what would be
    // due before the next run six hours later.
    let (config, text) = rendered_config(&objs);
    let cm = find(&objs, "ConfigMap");
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
        .expect("the config volume is mounted");
    assert_eq!(mount["readOnly"], true);
    let path = format!("{}/operator.yaml", str_of(&mount["mountPath"], "mountPath"));
    assert_eq!(
        c["args"],
        json!(["once", "--config", path, "--next-run-in", "6h"])
    );
    // The same config as the controller's; with leader election on, a pass takes the
    // Lease, so it never runs beside a controller of the same namespace.
    let default_objs = render("default");
    let (_, default_text) = rendered_config(&default_objs);
    assert_eq!(text, default_text);
    assert!(config.leader_election.enabled);
    assert!(config.watch.namespaces.is_empty());

    // The same container as the controller's, but for its name, args, port and probes;
    // the same pod security, account and volumes.
    let (_, default_pod) = workload(&default_objs);
    let strip = |c: &Value| {
        let mut c = c.clone();
        for k in ["name", "args", "ports", "livenessProbe", "readinessProbe"] {
            c.as_object_mut().unwrap().remove(k);
        }
        c
    };
    assert_eq!(strip(c), strip(&default_pod["containers"][0]));
    assert_eq!(pod["securityContext"], default_pod["securityContext"]);
    assert_eq!(pod["serviceAccountName"], default_pod["serviceAccountName"]);
    let names = |p: &Value| -> Vec<Value> {
        p["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].clone())
            .collect()
    };
    assert_eq!(names(pod), names(default_pod));

    // The controller's RBAC, bound to the account the CronJob runs as, and its admission
    // policies.
    let mut calls = OPERATOR_CALLS.to_vec();
    calls.push(NAMESPACE_CALLS);
    calls.push(LEASE_CALLS);
    assert_total_grants(&objs, &expand(&calls));
    assert_bound_to_operator(&objs);
    assert_admission_rendered(&objs);
}

// ---------------------------------------------------------------------------------------
// ValidatingAdmissionPolicies: rendering
// ---------------------------------------------------------------------------------------

/// The policies and bindings render, cluster-scoped, `Fail`, `Deny`, each binding naming
/// a rendered policy, and each policy scoped to the operator's username.
fn assert_admission_rendered(objs: &[Value]) {
    let (namespace, name) = operator_account(objs);
    let username = format!("system:serviceaccount:{namespace}:{name}");
    let policies = all_of(objs, "ValidatingAdmissionPolicy");
    let bindings = all_of(objs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        policies.len(),
        2,
        "one for Secrets, one for ServiceAccounts"
    );
    assert_eq!(bindings.len(), 2);
    for policy in &policies {
        assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
        assert!(policy["metadata"].get("namespace").is_none(), "{policy}");
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        let conditions = policy["spec"]["matchConditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{policy}");
        let expr = str_of(&conditions[0]["expression"], "matchCondition");
        // The rendered condition is true for the operator's username and false for any
        // other, and spells it out literally.
        let matches = |user: &str| {
            let request = json!({"userInfo": {"username": user}});
            let ctx = context(&request, &Value::Null, &Value::Null, HashMap::new());
            eval(expr, &ctx) == Ok(cel::Value::Bool(true))
        };
        assert!(matches(&username), "{expr} does not match {username}");
        for other in [
            format!("system:serviceaccount:{namespace}:default"),
            format!("system:serviceaccount:default:{name}"),
            "system:serviceaccount:system:controller-manager".to_string(),
            "kubernetes-admin".to_string(),
        ] {
            assert!(!matches(&other), "{expr} matches {other}");
        }
        let literal = expr.split('\'').skip(1).step_by(2).collect::<String>();
        assert_eq!(literal, username, "{expr}");
    }
    for binding in &bindings {
        assert!(binding["metadata"].get("namespace").is_none(), "{binding}");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert!(
            policies
                .iter()
                .any(|p| p["metadata"]["name"] == binding["spec"]["policyName"]),
            "{binding} names no rendered policy"
        );
    }
}

#[test]
fn the_admission_policies_render_for_the_cluster_wide_operator() {
    let objs = render("default");
    assert_admission_rendered(&objs);
    for binding in all_of(&objs, "ValidatingAdmissionPolicyBinding") {
        assert!(
            binding["spec"].get("matchResources").is_none(),
            "the cluster-wide operator writes in every namespace: {binding}"
        );
    }
}

#[test]
fn the_admission_policies_render_for_the_namespaced_operator_in_its_namespace() {
    let objs = render("namespaced");
    assert_admission_rendered(&objs);
    let (namespace, _) = operator_account(&objs);
    for binding in all_of(&objs, "ValidatingAdmissionPolicyBinding") {
        assert_eq!(
            binding["spec"]["matchResources"]["namespaceSelector"],
            json!({"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": [namespace],
            }]})
        );
    }
    // Cluster-scoped names carry the namespace, so installs in two namespaces (or one
    // beside config/default) do not overwrite each other's policies.
    let default_names: BTreeSet<String> = render("default")
        .iter()
        .filter(|o| o["apiVersion"] == "admissionregistration.k8s.io/v1")
        .map(|o| str_of(&o["metadata"]["name"], "name").to_string())
        .collect();
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        for obj in all_of(&objs, kind) {
            let name = str_of(&obj["metadata"]["name"], "name");
            assert!(name.ends_with(&format!(".{namespace}")), "{name}");
            assert!(!default_names.contains(name), "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// ValidatingAdmissionPolicies: evaluating their CEL
// ---------------------------------------------------------------------------------------

/// What the API server's ValidatingAdmissionPolicy plugin answers one request, from the
/// rendered policies and bindings.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// No binding's policy matched the request (resource, operation, namespace, user).
    NotMatched,
    /// At least one policy matched and all that matched admitted it.
    Allowed,
    /// A policy refused it: the message the API server returns.
    Denied(String),
}

/// One admission request, in the shape of `request`, `object` and `oldObject` that the
/// policies' CEL sees.
/// <https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/#validation-expression>
struct Request {
    user: String,
    operation: &'static str,
    resource: &'static str,
    namespace: String,
    name: String,
    /// The object as it would be stored; `null` on DELETE.
    object: Value,
    /// The object as it is stored; `null` on CREATE.
    old_object: Value,
}

fn context(
    request: &Value,
    object: &Value,
    old_object: &Value,
    variables: HashMap<String, cel::Value>,
) -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::default();
    ctx.add_variable("request", request).unwrap();
    ctx.add_variable("object", object).unwrap();
    ctx.add_variable("oldObject", old_object).unwrap();
    ctx.add_variable_from_value("variables", variables);
    ctx
}

/// Evaluates `expr`; a parse error fails the test (the policy is broken), an evaluation
/// error is returned (the API server treats it by `failurePolicy`).
fn eval(expr: &str, ctx: &cel::Context) -> Result<cel::Value, String> {
    let program = cel::Program::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    program.execute(ctx).map_err(|e| e.to_string())
}

/// The binding's `matchResources.namespaceSelector`, for the one shape the overlays use
/// (`kubernetes.io/metadata.name In [...]`); no selector matches every namespace.
fn binding_selects(binding: &Value, namespace: &str) -> bool {
    let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
    if selector.is_null() {
        return true;
    }
    let exprs = selector["matchExpressions"].as_array().unwrap();
    assert!(selector.get("matchLabels").is_none(), "{selector}");
    exprs.iter().all(|e| {
        assert_eq!(e["key"], "kubernetes.io/metadata.name", "{e}");
        assert_eq!(e["operator"], "In", "{e}");
        e["values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == namespace)
    })
}

fn policy_matches_resource(policy: &Value, req: &Request) -> bool {
    policy["spec"]["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|rule| {
            let has = |k: &str, v: &str| rule[k].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", "")
                && has("apiVersions", "v1")
                && has("resources", req.resource)
                && has("operations", req.operation)
        })
}

/// One policy on one request: `None` when its matchConditions exclude it, else whether
/// it admits it. Errors refuse (every policy here is `failurePolicy: Fail`).
fn evaluate(policy: &Value, req: &Request) -> Option<Result<(), String>> {
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let request = json!({
        "operation": req.operation,
        "userInfo": {"username": req.user},
        "resource": {"group": "", "version": "v1", "resource": req.resource},
        "namespace": req.namespace,
        "name": req.name,
    });
    let spec = &policy["spec"];
    let empty = Vec::new();
    let list = |k: &str| spec[k].as_array().unwrap_or(&empty);
    let fresh = |vars: &HashMap<String, cel::Value>| {
        context(&request, &req.object, &req.old_object, vars.clone())
    };
    let mut vars = HashMap::new();
    for cond in list("matchConditions") {
        match eval(str_of(&cond["expression"], "matchCondition"), &fresh(&vars)) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return None,
            other => return Some(Err(format!("matchCondition: {other:?}"))),
        }
    }
    // Variables are lazy in the API server; evaluated eagerly here, one that fails is
    // left out, so an expression that uses it fails as it would there.
    for var in list("variables") {
        let name = str_of(&var["name"], "variable name");
        if let Ok(v) = eval(str_of(&var["expression"], "variable"), &fresh(&vars)) {
            vars.insert(name.to_string(), v);
        }
    }
    for validation in list("validations") {
        let ctx = fresh(&vars);
        match eval(str_of(&validation["expression"], "validation"), &ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let message = match validation.get("messageExpression") {
                    Some(m) => match eval(str_of(m, "messageExpression"), &ctx) {
                        Ok(cel::Value::String(s)) => s.to_string(),
                        other => panic!("messageExpression {m}: {other:?}"),
                    },
                    None => str_of(&validation["message"], "message").to_string(),
                };
                assert!(
                    validation["message"].is_string(),
                    "a static message backs every messageExpression"
                );
                return Some(Err(message));
            }
            other => return Some(Err(format!("validation error: {other:?}"))),
        }
    }
    Some(Ok(()))
}

fn admit(objs: &[Value], req: &Request) -> Verdict {
    let mut verdict = Verdict::NotMatched;
    for binding in all_of(objs, "ValidatingAdmissionPolicyBinding") {
        let policy = all_of(objs, "ValidatingAdmissionPolicy")
            .into_iter()
            .find(|p| p["metadata"]["name"] == binding["spec"]["policyName"])
            .unwrap();
        if !policy_matches_resource(policy, req) || !binding_selects(binding, &req.namespace) {
            continue;
        }
        match evaluate(policy, req) {
            None => {}
            Some(Ok(())) => verdict = Verdict::Allowed,
            Some(Err(message)) => return Verdict::Denied(message),
        }
    }
    verdict
}

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";

fn secret(namespace: &str, name: &str, type_: &str, labels: Value) -> Value {
    let mut s = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "resourceVersion": "7"},
        "type": type_,
        "data": {".dockerconfigjson": "e30="},
    });
    if !labels.is_null() {
        s["metadata"]["labels"] = labels;
    }
    s
}

fn ours(namespace: &str, name: &str) -> Value {
    secret(
        namespace,
        name,
        DOCKERCONFIGJSON,
        json!({MANAGED_BY: "ecr-token-refresh", "ecr.aws.edenlab.io/owner-name": "ecr-credentials"}),
    )
}

fn service_account(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "builder",
            "namespace": namespace,
            "uid": "u-2",
            "resourceVersion": "3",
            "labels": {"team": "a"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-3"}],
            "finalizers": ["example.com/keep"],
        },
        "secrets": [{"name": "builder-token"}],
        "imagePullSecrets": [{"name": "registry"}],
        "automountServiceAccountToken": false,
    })
}

/// Runs the sample requests against one rendered overlay; `namespace` is where the
/// operator may write.
fn assert_policies_decide(objs: &[Value], namespace: &str) {
    let (sa_ns, sa_name) = operator_account(objs);
    let operator = format!("system:serviceaccount:{sa_ns}:{sa_name}");
    let req = |operation, resource, name: &str, object: Value, old_object: Value| Request {
        user: operator.clone(),
        operation,
        resource,
        namespace: namespace.to_string(),
        name: name.to_string(),
        object,
        old_object,
    };
    let denied = |r: &Request, wanted: &[&str]| match admit(objs, r) {
        Verdict::Denied(message) => {
            for w in wanted {
                assert!(message.contains(w), "{message:?} lacks {w:?}");
            }
        }
        other => panic!(
            "{} {} {}/{} by {}: {other:?}, wanted Denied",
            r.operation, r.resource, r.namespace, r.name, r.user
        ),
    };
    let allowed = |r: &Request| {
        assert_eq!(
            admit(objs, r),
            Verdict::Allowed,
            "{} {} {}/{}",
            r.operation,
            r.resource,
            r.namespace,
            r.name
        );
    };
    let managed = json!({MANAGED_BY: "ecr-token-refresh"});
    let null = Value::Null;

    // Secrets: create only our own kind.
    let opaque = secret(namespace, "ecr-credentials", "Opaque", managed.clone());
    denied(
        &req("CREATE", "secrets", "ecr-credentials", opaque, null.clone()),
        &["CREATE Secret", &format!("{namespace}/ecr-credentials")],
    );
    let unlabelled = secret(namespace, "ecr-credentials", DOCKERCONFIGJSON, null.clone());
    denied(
        &req(
            "CREATE",
            "secrets",
            "ecr-credentials",
            unlabelled,
            null.clone(),
        ),
        &["CREATE Secret"],
    );
    let helm = secret(
        namespace,
        "ecr-credentials",
        DOCKERCONFIGJSON,
        json!({MANAGED_BY: "Helm"}),
    );
    denied(
        &req("CREATE", "secrets", "ecr-credentials", helm, null.clone()),
        &["CREATE Secret"],
    );
    allowed(&req(
        "CREATE",
        "secrets",
        "ecr-credentials",
        ours(namespace, "ecr-credentials"),
        null.clone(),
    ));

    // Secrets: update and delete only what we wrote, and keep it ours.
    let foreign = secret(
        namespace,
        "pull",
        DOCKERCONFIGJSON,
        json!({"app": "someone-else"}),
    );
    denied(
        &req(
            "UPDATE",
            "secrets",
            "pull",
            ours(namespace, "pull"),
            foreign.clone(),
        ),
        &[
            "UPDATE Secret",
            &format!("{namespace}/pull"),
            "did not write",
        ],
    );
    denied(
        &req("DELETE", "secrets", "pull", null.clone(), foreign),
        &[
            "DELETE Secret",
            &format!("{namespace}/pull"),
            "did not write",
        ],
    );
    let helm_pull = secret(
        namespace,
        "pull",
        DOCKERCONFIGJSON,
        json!({MANAGED_BY: "Helm"}),
    );
    denied(
        &req("DELETE", "secrets", "pull", null.clone(), helm_pull),
        &["DELETE Secret", "did not write"],
    );
    let foreign_opaque = secret(namespace, "db", "Opaque", managed.clone());
    denied(
        &req("DELETE", "secrets", "db", null.clone(), foreign_opaque),
        &["DELETE Secret"],
    );
    // The other formats of spec.secretTemplate: basic-auth, and Argo CD repository Secrets
    // (Opaque only with Argo CD's repository label).
    let argocd_labels =
        json!({MANAGED_BY: "ecr-token-refresh", "argocd.argoproj.io/secret-type": "repository"});
    for (type_, labels) in [
        ("kubernetes.io/basic-auth", managed.clone()),
        ("Opaque", argocd_labels.clone()),
    ] {
        let written = secret(namespace, "pull-fmt", type_, labels);
        allowed(&req(
            "CREATE",
            "secrets",
            "pull-fmt",
            written.clone(),
            null.clone(),
        ));
        allowed(&req("DELETE", "secrets", "pull-fmt", null.clone(), written));
    }
    let mut cluster_secret = argocd_labels.clone();
    cluster_secret["argocd.argoproj.io/secret-type"] = json!("cluster");
    let argocd_cluster = secret(namespace, "prod", "Opaque", cluster_secret);
    denied(
        &req(
            "DELETE",
            "secrets",
            "prod",
            null.clone(),
            argocd_cluster.clone(),
        ),
        &["DELETE Secret", "did not write"],
    );
    denied(
        &req("CREATE", "secrets", "prod", argocd_cluster, null.clone()),
        &["CREATE Secret"],
    );
    let mut refreshed = ours(namespace, "ecr-credentials");
    refreshed["data"][".dockerconfigjson"] = json!("eyJhdXRocyI6e319");
    allowed(&req(
        "UPDATE",
        "secrets",
        "ecr-credentials",
        refreshed,
        ours(namespace, "ecr-credentials"),
    ));
    let mut disowned = ours(namespace, "ecr-credentials");
    disowned["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(MANAGED_BY);
    denied(
        &req(
            "UPDATE",
            "secrets",
            "ecr-credentials",
            disowned,
            ours(namespace, "ecr-credentials"),
        ),
        &["UPDATE Secret"],
    );
    allowed(&req(
        "DELETE",
        "secrets",
        "ecr-credentials",
        null.clone(),
        ours(namespace, "ecr-credentials"),
    ));

    // Anyone else is not matched at all, whatever they do.
    for user in [
        "kubernetes-admin",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        &format!("system:serviceaccount:{namespace}:default"),
    ] {
        let opaque = secret(namespace, "db", "Opaque", null.clone());
        let mut r = req("CREATE", "secrets", "db", opaque.clone(), null.clone());
        r.user = user.to_string();
        assert_eq!(admit(objs, &r), Verdict::NotMatched, "{user}");
        let mut r = req("DELETE", "secrets", "db", null.clone(), opaque);
        r.user = user.to_string();
        assert_eq!(admit(objs, &r), Verdict::NotMatched, "{user}");
        let mut r = req(
            "DELETE",
            "serviceaccounts",
            "builder",
            null.clone(),
            service_account(namespace),
        );
        r.user = user.to_string();
        assert_eq!(admit(objs, &r), Verdict::NotMatched, "{user}");
    }

    // ServiceAccounts: imagePullSecrets and annotations only.
    let old = service_account(namespace);
    let mut pulls = old.clone();
    pulls["imagePullSecrets"] = json!([{"name": "registry"}, {"name": "ecr-credentials"}]);
    pulls["metadata"]["resourceVersion"] = json!("4");
    allowed(&req(
        "UPDATE",
        "serviceaccounts",
        "builder",
        pulls.clone(),
        old.clone(),
    ));
    let mut annotated = pulls.clone();
    annotated["metadata"]["annotations"] =
        json!({"ecr.aws.edenlab.io/image-pull-secrets": "ecr-credentials"});
    allowed(&req(
        "UPDATE",
        "serviceaccounts",
        "builder",
        annotated,
        old.clone(),
    ));
    // Absent fields stay absent: allowed (the has() guards hold).
    let mut bare = old.clone();
    for k in [
        "secrets",
        "imagePullSecrets",
        "automountServiceAccountToken",
    ] {
        bare.as_object_mut().unwrap().remove(k);
    }
    for k in ["labels", "ownerReferences", "finalizers"] {
        bare["metadata"].as_object_mut().unwrap().remove(k);
    }
    let mut bare_pulls = bare.clone();
    bare_pulls["imagePullSecrets"] = json!([{"name": "ecr-credentials"}]);
    allowed(&req(
        "UPDATE",
        "serviceaccounts",
        "builder",
        bare_pulls,
        bare.clone(),
    ));
    // Any other change, to another value, removed, or added where there was none.
    let other_owner = json!([{"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "u"}]);
    for (field, change) in [
        ("secrets", json!({"secrets": [{"name": "stolen-token"}]})),
        ("secrets", json!({"secrets": null})),
        (
            "automountServiceAccountToken",
            json!({"automountServiceAccountToken": true}),
        ),
        (
            "automountServiceAccountToken",
            json!({"automountServiceAccountToken": null}),
        ),
        ("labels", json!({"metadata": {"labels": {"team": "b"}}})),
        ("labels", json!({"metadata": {"labels": null}})),
        (
            "ownerReferences",
            json!({"metadata": {"ownerReferences": other_owner}}),
        ),
        (
            "ownerReferences",
            json!({"metadata": {"ownerReferences": null}}),
        ),
        ("finalizers", json!({"metadata": {"finalizers": ["x/y"]}})),
        ("finalizers", json!({"metadata": {"finalizers": null}})),
    ] {
        let mut changed = pulls.clone();
        merge_patch(&mut changed, &change);
        denied(
            &req("UPDATE", "serviceaccounts", "builder", changed, old.clone()),
            &[field, &format!("ServiceAccount {namespace}/builder")],
        );
        let mut added = bare.clone();
        merge_patch(&mut added, &change);
        if added != bare {
            denied(
                &req("UPDATE", "serviceaccounts", "builder", added, bare.clone()),
                &[field],
            );
        }
    }
    denied(
        &req(
            "CREATE",
            "serviceaccounts",
            "builder",
            old.clone(),
            null.clone(),
        ),
        &["CREATE ServiceAccount"],
    );
    denied(
        &req("DELETE", "serviceaccounts", "builder", null.clone(), old),
        &["DELETE ServiceAccount"],
    );
}

/// RFC 7386 JSON merge patch (what `kubectl patch --type merge` does).
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[test]
fn the_cluster_wide_policies_fence_the_operators_writes() {
    let objs = render("default");
    for namespace in ["ecr-token-refresh-system", "apps", "team-b"] {
        assert_policies_decide(&objs, namespace);
    }
}

#[test]
fn the_namespaced_policies_fence_the_operators_writes_in_its_namespace() {
    let objs = render("namespaced");
    let (namespace, name) = operator_account(&objs);
    assert_policies_decide(&objs, namespace);
    // Elsewhere the bindings do not apply (RBAC already refuses every write there).
    let r = Request {
        user: format!("system:serviceaccount:{namespace}:{name}"),
        operation: "CREATE",
        resource: "secrets",
        namespace: "team-b".into(),
        name: "db".into(),
        object: secret("team-b", "db", "Opaque", Value::Null),
        old_object: Value::Null,
    };
    assert_eq!(admit(&objs, &r), Verdict::NotMatched);
}

// ---------------------------------------------------------------------------------------
// Plugin delivery (config/plugins/*): three ways to fill the plugins directory
// ---------------------------------------------------------------------------------------

/// The Deployment's pod spec in `overlay`, the manager container, and its plugins volume
/// with the manager's mount of it.
fn plugins_delivery(overlay: &str) -> (Value, Value, Value, Value) {
    let objs = render(overlay);
    let deploy = find(&objs, "Deployment").clone();
    let pod = deploy["spec"]["template"]["spec"].clone();
    let manager = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "manager")
        .unwrap()
        .clone();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "plugins")
        .expect("a plugins volume")
        .clone();
    let mount = manager["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "plugins")
        .expect("the plugins volume is mounted")
        .clone();
    assert_eq!(mount["mountPath"], "/plugins");
    assert_eq!(mount["readOnly"], true, "{overlay}: read-only");
    let directory = manager["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ECR_TOKEN_REFRESH_POLICY__DIRECTORY")
        .unwrap_or_else(|| panic!("{overlay}: policy.directory is set"));
    assert_eq!(directory["value"], "/plugins");
    (pod, manager, volume, mount)
}

#[test]
fn plugins_can_be_delivered_by_configmap_image_volume_or_init_container() {
    if !kubectl_present() {
        eprintln!("SKIPPED: kubectl is not installed; config/plugins/* cannot be rendered");
        return;
    }
    // A ConfigMap the cluster owner creates (binaryData), optional so the operator starts
    // without it.
    let (_, _, volume, _) = plugins_delivery("plugins/configmap");
    assert_eq!(volume["configMap"]["name"], "ecr-token-refresh-plugins");
    assert_eq!(volume["configMap"]["optional"], true);
    assert!(volume.get("emptyDir").is_none(), "{volume}");

    // An image volume: the plugins image keeps its files under /plugins/.
    let (_, _, volume, mount) = plugins_delivery("plugins/image-volume");
    assert_eq!(
        volume["image"]["reference"],
        "ecr-token-refresh-plugins:latest"
    );
    assert_eq!(mount["subPath"], "plugins");
    assert!(volume.get("emptyDir").is_none(), "{volume}");

    // An init container copies them into the shared emptyDir, as the operator's user.
    let (pod, _, volume, _) = plugins_delivery("plugins/init-container");
    assert!(volume.get("emptyDir").is_some(), "{volume}");
    let init = &pod["initContainers"][0];
    assert_eq!(
        init["command"],
        json!(["cp", "-R", "/plugins/.", "/shared/"])
    );
    assert_eq!(init["volumeMounts"][0]["name"], "plugins");
    assert_eq!(init["securityContext"]["runAsNonRoot"], true);
    assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
}
