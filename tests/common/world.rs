//! The fault matrix's world: the real controller against the Kubernetes stand-in with
//! furniture every case must leave intact — a bystander resource in another region that
//! must stay served, foreign Secrets that must never change — and the invariants checked
//! after each case: no managed Secret lost or blanked, no foreign Secret changed, the
//! operator still serving (a resource created after the fault gets its Secret).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use ecr_token_refresh::controller::Settings;
use ecr_token_refresh::policy::Policies;
use serde_json::{Value, json};
use sha2::Digest;

use super::tokens::ScriptedTokens;
use super::*;

pub const NAMESPACES: &str = "v1/namespaces";
/// The bystander's registry: another region than the cases' (so an ECR fault scripted for
/// `us-east-1` does not touch it).
pub const OTHER_HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

pub struct World {
    pub cluster: Cluster,
    pub tokens: Arc<ScriptedTokens>,
    running: Option<Running>,
    /// Foreign Secrets as created: (namespace, name) → object.
    foreign: BTreeMap<(String, String), Value>,
    /// Managed Secrets the case says must survive.
    kept: Vec<(String, String)>,
}

/// The spec of a resource for `host` (region from the host).
pub fn spec_for(host: &str) -> Value {
    let region = host.split('.').nth(3).unwrap_or("us-east-1");
    json!({"ecrRegistry": host, "frequency": "8h", "region": region})
}

impl World {
    pub async fn start() -> Self {
        Self::start_with(fast_settings(), fast_policies(), ScriptedTokens::default()).await
    }

    pub async fn start_with(
        settings: Settings,
        policies: Arc<Policies>,
        tokens: ScriptedTokens,
    ) -> Self {
        let cluster = Cluster::start().await;
        for ns in ["default", "tenant"] {
            cluster
                .api
                .create(
                    NAMESPACES,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .unwrap();
        }
        let tokens = Arc::new(tokens);
        let mut foreign = BTreeMap::new();
        for (ns, name, type_, data) in [
            (
                "default",
                "foreign-opaque",
                "Opaque",
                json!({"hello": "d29ybGQ="}),
            ),
            (
                "default",
                "foreign-pull",
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(r#"{"auths":{"example.com":{"auth":"Zm9vOmJhcg=="}}}"#)}),
            ),
        ] {
            let obj = cluster
                .api
                .create(
                    SECRETS,
                    json!({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": name, "namespace": ns, "labels": {"team": "other"}},
                           "type": type_, "data": data}),
                )
                .unwrap();
            foreign.insert((ns.to_string(), name.to_string()), obj);
        }
        let running =
            start_controller_with(cluster.client.clone(), tokens.clone(), policies, settings);
        let world = Self {
            cluster,
            tokens,
            running: Some(running),
            foreign,
            kept: Vec::new(),
        };
        world.apply("default", "bystander", spec_for(OTHER_HOST));
        world
            .wait_ready("default", "bystander", "True", "TokenRefreshed")
            .await;
        world
    }

    /// Creates an `ECRTokenRefresh` (the stand-in assigns uid and generation).
    pub fn apply(&self, namespace: &str, name: &str, spec: Value) -> Value {
        self.cluster
            .api
            .create(
                CRS,
                json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
            )
            .unwrap()
    }

    pub fn cr(&self, namespace: &str, name: &str) -> Value {
        self.cluster
            .api
            .get(CRS, Some(namespace), name)
            .unwrap_or(Value::Null)
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.cluster.api.get(SECRETS, Some(namespace), name)
    }

    /// Waits until the `Ready` condition of `namespace/name` has `status` and `reason`.
    pub async fn wait_ready(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
        reason: &str,
    ) -> Value {
        let ok = self
            .cluster
            .api
            .wait_for(WAIT, |api| {
                let c = ready_of(&api.get(CRS, Some(namespace), name).unwrap_or(Value::Null));
                c["status"] == status && c["reason"] == reason
            })
            .await;
        assert!(
            ok,
            "{namespace}/{name} never got Ready={status}/{reason}; last: {:#}",
            self.cr(namespace, name)["status"]
        );
        ready_of(&self.cr(namespace, name))
    }

    /// The case says this managed Secret must still be there, intact, at the end.
    pub fn keep(&mut self, namespace: &str, name: &str) {
        self.kept.push((namespace.to_string(), name.to_string()));
    }

    /// Adds a foreign Secret that must never change.
    pub fn add_foreign(&mut self, obj: Value) -> Value {
        let created = self.cluster.api.create(SECRETS, obj).unwrap();
        let key = (
            created["metadata"]["namespace"]
                .as_str()
                .unwrap()
                .to_string(),
            created["metadata"]["name"].as_str().unwrap().to_string(),
        );
        self.foreign.insert(key, created.clone());
        created
    }

    /// Every Secret carrying the managed-by label.
    pub fn managed(&self) -> Vec<Value> {
        self.cluster.api.list_selected(
            SECRETS,
            None,
            "app.kubernetes.io/managed-by=ecr-token-refresh",
        )
    }

    /// ECR calls made so far (successful ones).
    pub fn ecr_calls(&self) -> u32 {
        self.tokens.calls()
    }

    /// The invariants every case ends with.
    pub async fn check(&self) {
        // Foreign Secrets: byte for byte what was created.
        for ((ns, name), before) in &self.foreign {
            let now = self
                .secret(ns, name)
                .unwrap_or_else(|| panic!("foreign Secret {ns}/{name} was deleted"));
            assert_eq!(
                (
                    &now["metadata"]["resourceVersion"],
                    &now["data"],
                    &now["type"]
                ),
                (
                    &before["metadata"]["resourceVersion"],
                    &before["data"],
                    &before["type"]
                ),
                "foreign Secret {ns}/{name} was changed"
            );
        }
        // Managed Secrets: never blanked; the kept ones there.
        for s in self.managed() {
            if s["type"] == "kubernetes.io/dockerconfigjson" {
                assert_pull_secret_sound(&s);
            }
        }
        for (ns, name) in &self.kept {
            let s = self
                .secret(ns, name)
                .unwrap_or_else(|| panic!("managed Secret {ns}/{name} was lost"));
            assert_pull_secret_sound(&s);
        }
        // Still serving: the bystander is Ready, and a resource created now is served.
        let c = ready_of(&self.cr("default", "bystander"));
        assert_eq!(c["status"], "True", "the bystander is not served: {c}");
        let late = format!("late-{}", self.cluster.api.resource_version());
        self.apply("default", &late, spec_for(OTHER_HOST));
        self.wait_ready("default", &late, "True", "TokenRefreshed")
            .await;
        assert!(self.secret("default", &late).is_some());
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// A pull Secret holding a complete entry whose `auth` matches, data matching its hash.
pub fn assert_pull_secret_sound(s: &Value) {
    let name = format!("{}/{}", s["metadata"]["namespace"], s["metadata"]["name"]);
    let b64 = s["data"][".dockerconfigjson"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no .dockerconfigjson"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let doc: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{name}: .dockerconfigjson is not JSON: {e}"));
    let auths = doc["auths"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: no auths"));
    assert!(!auths.is_empty(), "{name}: blank auths");
    for (host, entry) in auths {
        let password = entry["password"].as_str().unwrap_or_default();
        assert!(!password.is_empty(), "{name}: blank password for {host}");
    }
    let hash: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(annotated) = s["metadata"]["annotations"]["ecr.aws.edenlab.io/data-sha256"].as_str()
    {
        assert_eq!(annotated, hash, "{name}: data does not match its hash");
    }
}

/// The password in a pull Secret for `host`.
pub fn password_in(s: &Value, host: &str) -> String {
    let b64 = s["data"][".dockerconfigjson"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    doc["auths"][host]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
