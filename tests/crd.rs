//! The committed CRD YAML must match the Rust types.

#[test]
fn committed_crd_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/crd/ecr.aws.edenlab.io_ecrtokenrefreshes.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("config/crd YAML is committed");
    let generated = ecr_token_refresh::crd::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "config/crd is out of date with src/api; regenerate it with\n  \
         cargo run -q -- crd > config/crd/ecr.aws.edenlab.io_ecrtokenrefreshes.yaml"
    );
}

#[test]
fn crd_has_the_columns_and_subresource_users_expect() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&ecr_token_refresh::crd::crd_yaml().unwrap()).unwrap();
    let v = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["group"], "ecr.aws.edenlab.io");
    assert_eq!(crd["spec"]["names"]["plural"], "ecrtokenrefreshes");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert!(v["subresources"]["status"].is_object());
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in ["Ready", "Registry", "Expires", "Last Refresh", "Age"] {
        assert!(columns.contains(&c), "missing column {c}: {columns:?}");
    }
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["required"],
        serde_json::json!(["ecrRegistry", "frequency"]),
        "region is optional: it comes from the host"
    );
    let rule = spec["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap();
    assert!(
        rule.contains("!has(self.region) ||") && rule.contains("self.region"),
        "{rule}"
    );
}
