//! The fault matrix's world: the real controller against the Kubernetes stand-in with
//! furniture every case must leave intact — a bystander resource in another region that
//! must stay served, foreign Secrets that must never change — and the invariants checked
//! after each case: no managed Secret lost or blanked, no foreign Secret changed, the
//! operator still serving (a resource created after the fault gets its Secret).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use ecr_token_refresh::controller::Settings;
use ecr_token_refresh::policy::{BuiltinRetry, HostConfig, PluginRegistry, Policies};
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
        Self::start_on(Cluster::start().await, settings, policies, tokens).await
    }

    /// [`World::start_with`] on a cluster the case built itself (e.g. a stand-in with a
    /// small watch-event retention).
    pub async fn start_on(
        cluster: Cluster,
        settings: Settings,
        policies: Arc<Policies>,
        tokens: ScriptedTokens,
    ) -> Self {
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

// ---------------------------------------------------------------------------------------
// Fan-out, plugins, ServiceAccounts and observation helpers (fault matrix, part 2).

use super::plugins;

/// Plural path of ServiceAccounts in the stand-in.
pub const SERVICE_ACCOUNTS: &str = "v1/serviceaccounts";
/// The label the `fanout-label` plugin selects namespaces by, and its value.
pub const FANOUT_LABEL: &str = "ecr-pull";
pub const FANOUT_VALUE: &str = "enabled";
/// The namespace whose resources may fan out (see [`fanout_settings`]).
pub const PLATFORM: &str = "platform";

/// Policies with the plugins `entries` registered, as a cluster owner would: each entry
/// is (registered name, plugin crate under `plugins/`, settings as inline YAML). Builds
/// the plugins on first use.
pub async fn plugin_policies(entries: &[(&str, &str, &str)]) -> Arc<Policies> {
    let mut yaml = String::from("plugins:\n");
    for (name, krate, settings) in entries {
        let path = plugins::wasm(krate);
        yaml.push_str(&format!(
            "  {name}:\n    path: {}\n    sha256: {}\n    settings: {settings}\n",
            path.display(),
            plugins::sha256_of(&path)
        ));
    }
    let registry = PluginRegistry::from_yaml(&yaml, &plugins::repo_root()).unwrap();
    let policies =
        tokio::task::spawn_blocking(move || Policies::load(&registry, HostConfig::default()))
            .await
            .unwrap();
    // The same fast built-in retry as `fast_policies`.
    Arc::new(policies.with_builtin_retry(BuiltinRetry {
        base: std::time::Duration::from_millis(200),
        cap: std::time::Duration::from_secs(2),
        ..BuiltinRetry::default()
    }))
}

/// The `fanout-label` plugin registered as `labelled` (namespaces labelled
/// `ecr-pull=enabled`) and the `naming-prefix` plugin as `prefixed-names` (prefix `team`).
pub async fn label_policies() -> Arc<Policies> {
    plugin_policies(&[
        (
            "labelled",
            "fanout-label",
            "{label: ecr-pull, value: enabled}",
        ),
        ("prefixed-names", "naming-prefix", "{prefix: team}"),
    ])
    .await
}

/// [`fast_settings`] letting resources in [`PLATFORM`] fan out.
pub fn fanout_settings() -> Settings {
    Settings {
        fanout_sources: std::collections::BTreeSet::from([PLATFORM.to_string()]),
        ..fast_settings()
    }
}

/// The spec of a resource for [`HOST`] fanning out with the `labelled` plugin, `extra`
/// merged in.
pub fn fanout_spec(extra: Value) -> Value {
    let mut spec = spec_for(HOST);
    spec["policy"] = json!({"fanout": "labelled"});
    if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
        s.extend(e);
    }
    spec
}

impl World {
    /// A world whose controller may fan out from [`PLATFORM`] with the label plugin, with
    /// namespaces `platform` (unlabelled), `a` and `b` (labelled) besides `default` and
    /// `tenant` (unlabelled).
    pub async fn start_fanout() -> Self {
        Self::start_fanout_with(ScriptedTokens::default()).await
    }

    /// [`World::start_fanout`] with a token source of the case's choosing.
    pub async fn start_fanout_with(tokens: ScriptedTokens) -> Self {
        let world = Self::start_with(fanout_settings(), label_policies().await, tokens).await;
        world.namespace(PLATFORM, false);
        world.namespace("a", true);
        world.namespace("b", true);
        world
    }

    /// Creates a namespace, labelled for fan-out or not.
    pub fn namespace(&self, name: &str, labelled: bool) {
        let labels = if labelled {
            json!({FANOUT_LABEL: FANOUT_VALUE})
        } else {
            json!({})
        };
        self.cluster
            .api
            .create(
                NAMESPACES,
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": name, "labels": labels}}),
            )
            .unwrap();
    }

    /// Sets or removes the fan-out label of a namespace.
    pub fn label_namespace(&self, name: &str, labelled: bool) {
        let value = if labelled {
            json!(FANOUT_VALUE)
        } else {
            Value::Null
        };
        self.cluster
            .api
            .merge_patch(
                NAMESPACES,
                None,
                name,
                json!({"metadata": {"labels": {FANOUT_LABEL: value}}}),
                false,
            )
            .unwrap();
    }

    /// `metadata.uid` of a resource.
    pub fn uid(&self, namespace: &str, name: &str) -> String {
        self.cr(namespace, name)["metadata"]["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{namespace}/{name} has no uid"))
            .to_string()
    }

    /// Namespaces holding a Secret named `name`.
    pub fn holders(&self, name: &str) -> std::collections::BTreeSet<String> {
        self.cluster
            .api
            .list(SECRETS, None)
            .into_iter()
            .filter(|s| s["metadata"]["name"] == name)
            .map(|s| s["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until exactly the namespaces `want` hold a Secret named `name`.
    pub async fn wait_holders(&self, name: &str, want: &[&str]) {
        let want: std::collections::BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        let ok = self
            .cluster
            .api
            .wait_for(WAIT, |_| self.holders(name) == want)
            .await;
        assert!(
            ok,
            "Secret {name} is in {:?}, want {want:?}",
            self.holders(name)
        );
    }

    /// Waits until the resource satisfies `f`; `what` names the expectation in the panic.
    pub async fn wait_cr(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let ok = self
            .cluster
            .api
            .wait_for(WAIT, |api| {
                f(&api.get(CRS, Some(namespace), name).unwrap_or(Value::Null))
            })
            .await;
        let cr = self.cr(namespace, name);
        assert!(
            ok,
            "{namespace}/{name}: never {what}; last: {:#}",
            json!({"metadata": cr["metadata"], "status": cr["status"]})
        );
        cr
    }

    /// Waits until the resource is gone (its finalizer removed).
    pub async fn wait_gone(&self, namespace: &str, name: &str) {
        let ok = self
            .cluster
            .api
            .wait_for(WAIT, |api| api.get(CRS, Some(namespace), name).is_none())
            .await;
        assert!(
            ok,
            "{namespace}/{name} was never removed; last: {:#}",
            self.cr(namespace, name)
        );
    }

    /// Waits until the Secret satisfies `f` (`None`: absent).
    pub async fn wait_secret(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        f: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let ok = self
            .cluster
            .api
            .wait_for(WAIT, |api| {
                f(api.get(SECRETS, Some(namespace), name).as_ref())
            })
            .await;
        let s = self.secret(namespace, name);
        assert!(ok, "Secret {namespace}/{name}: never {what}; last: {s:#?}");
        s
    }

    /// Events about `namespace/name`, as (type, reason, note).
    pub fn events_about(&self, namespace: &str, name: &str) -> Vec<(String, String, String)> {
        self.cluster
            .api
            .list(EVENTS, Some(namespace))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("reason"), s("note"))
            })
            .collect()
    }

    /// Waits until an Event of `type_` and `reason` about `namespace/name` exists; returns
    /// its note.
    pub async fn wait_event(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        reason: &str,
    ) -> String {
        let found = || {
            self.events_about(namespace, name)
                .into_iter()
                .find(|(t, r, _)| t == type_ && r == reason)
                .map(|(_, _, n)| n)
        };
        let ok = self.cluster.api.wait_for(WAIT, |_| found().is_some()).await;
        assert!(
            ok,
            "no {type_} Event {reason} about {namespace}/{name}; events: {:?}",
            self.events_about(namespace, name)
        );
        found().unwrap_or_default()
    }

    /// An existing Secret that must not change from now on (checked by [`World::check`]).
    pub fn adopt_foreign(&mut self, namespace: &str, name: &str) {
        let now = self
            .secret(namespace, name)
            .unwrap_or_else(|| panic!("no Secret {namespace}/{name} to adopt"));
        self.foreign
            .insert((namespace.to_string(), name.to_string()), now);
    }

    /// Creates a ServiceAccount with these `imagePullSecrets` entries.
    pub fn service_account(&self, namespace: &str, name: &str, pulls: &[&str]) -> Value {
        let list: Vec<Value> = pulls.iter().map(|n| json!({"name": n})).collect();
        self.cluster
            .api
            .create(
                SERVICE_ACCOUNTS,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": name, "namespace": namespace},
                       "imagePullSecrets": list}),
            )
            .unwrap()
    }

    /// The names in a ServiceAccount's `imagePullSecrets`, in order.
    pub fn pulls(&self, namespace: &str, name: &str) -> Vec<String> {
        self.cluster
            .api
            .get(SERVICE_ACCOUNTS, Some(namespace), name)
            .and_then(|sa| sa["imagePullSecrets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The operator's record of the entries it added to a ServiceAccount (Secret name →
    /// owner uid); empty when there is none.
    pub fn pull_record(&self, namespace: &str, name: &str) -> BTreeMap<String, String> {
        self.cluster
            .api
            .get(SERVICE_ACCOUNTS, Some(namespace), name)
            .and_then(|sa| {
                sa["metadata"]["annotations"]["ecr.aws.edenlab.io/image-pull-secrets"]
                    .as_str()
                    .map(str::to_string)
            })
            .map(|v| serde_json::from_str(&v).expect("the record is a JSON object"))
            .unwrap_or_default()
    }

    /// Waits until a ServiceAccount's `imagePullSecrets` names are exactly `want`.
    pub async fn wait_pulls(&self, namespace: &str, name: &str, want: &[&str]) {
        let ok = self
            .cluster
            .api
            .wait_for(WAIT, |_| self.pulls(namespace, name) == want)
            .await;
        assert!(
            ok,
            "ServiceAccount {namespace}/{name} lists {:?}, want {want:?}",
            self.pulls(namespace, name)
        );
    }

    /// Sets a field of a resource's status behind the operator's back (a status write
    /// triggers no reconcile): any later reconcile rewrites it, so it shows whether one ran.
    pub fn tamper_status(&self, namespace: &str, name: &str) {
        self.cluster
            .api
            .merge_patch(
                CRS,
                Some(namespace),
                name,
                json!({"status": {"servedNamespaces": TAMPERED}}),
                true,
            )
            .unwrap();
    }

    /// Whether the status field set by [`World::tamper_status`] is still as set (no
    /// reconcile has run since).
    pub fn still_tampered(&self, namespace: &str, name: &str) -> bool {
        self.cr(namespace, name)["status"]["servedNamespaces"] == TAMPERED
    }

    /// Waits until the operator has made no request for `quiet`.
    pub async fn quiet(&self, quiet: std::time::Duration) {
        settle(&self.cluster.api, quiet).await;
    }
}

/// The value [`World::tamper_status`] writes.
const TAMPERED: u32 = 4242;

/// A sound `.dockerconfigjson` (base64) for `host` with `password`, and its sha256 hex.
pub fn docker_config(host: &str, password: &str) -> (String, String) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    let doc = serde_json::to_vec(
        &json!({"auths": {host: {"username": "AWS", "password": password, "auth": auth}}}),
    )
    .unwrap();
    let hash: String = sha2::Sha256::digest(&doc)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (base64::engine::general_purpose::STANDARD.encode(doc), hash)
}
