//! `ecr-token-refresh render`: what the operator would write for some resources, offline
//! (no cluster, no AWS).
//!
//! The same code as the controller decides: the spec's validation, the operator's access
//! rules, the policies (built-in or the plugins of the operator config, with its limits),
//! [`targets::resolve`] for the namespaces and names, [`Layout`] for the Secrets and
//! [`plan::pull_secret_ops`] for the ServiceAccounts. Only the token is a placeholder.
//!
//! Output (stdout): per resource, a comment block with the decisions (target namespaces,
//! the name in each, ServiceAccount changes), then each Secret as a YAML document with its
//! data as `stringData` and the password replaced by [`PLACEHOLDER_PASSWORD`]. Errors name
//! the file, the document, the resource and the field.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use secrecy::SecretString;
use serde::Deserialize as _;

use crate::api::ECRTokenRefresh;
use crate::config::OperatorConfig;
use crate::controller::caches::CachedNamespace;
use crate::controller::plan::{self, ServiceAccountView};
use crate::controller::{self, targets};
use crate::ecr::{AuthorizationToken, Credentials, HeldToken, TokenKey, TokenRequest};
use crate::policy::Policies;
use crate::secret::{self, Owner, SecretTarget};
use crate::secret_format::Layout;

/// Stands for the ECR password in rendered Secrets.
pub const PLACEHOLDER_PASSWORD: &str =
    "<password: an ECR authorization token, fetched at run time>";
/// Stands for the resource's `metadata.uid` (given by the API server) when a file has none.
pub const PLACEHOLDER_UID: &str = "<uid>";

/// Arguments of `render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Files of `ECRTokenRefresh` resources (YAML, several documents each; `-` reads
    /// stdin). Other kinds in them are skipped.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The Namespaces and ServiceAccounts of the cluster, as `kubectl get ns,sa -A -o yaml`
    /// prints them: the fan-out candidates and the ServiceAccounts to patch. Without it only
    /// the resources' own namespaces are known.
    #[arg(long, value_name = "FILE")]
    pub cluster_state: Option<PathBuf>,
    /// Namespace of resources that name none (as `kubectl apply` would use).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// One resource read from a file.
#[derive(Debug, Clone)]
pub struct Sourced {
    /// Where it came from: `FILE` or `FILE#N` (N: the document, from 1).
    pub source: String,
    /// The resource.
    pub resource: ECRTokenRefresh,
}

/// The Namespaces and ServiceAccounts of a `--cluster-state` file.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Namespaces (metadata only, as the controller's cache holds them).
    pub namespaces: Vec<Arc<CachedNamespace>>,
    /// ServiceAccounts.
    pub service_accounts: Vec<ServiceAccount>,
}

/// Reads the text of `path` (`-`: stdin).
///
/// # Errors
/// The path and the I/O error.
pub fn read(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The YAML documents of `text`, each as a value; a `v1` `List` gives its items.
fn documents(text: &str) -> Vec<Result<serde_yaml::Value, String>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(v) if v.get("kind").and_then(|k| k.as_str()) == Some("List") => {
                let items = v.get("items").and_then(|i| i.as_sequence()).cloned();
                out.extend(items.unwrap_or_default().into_iter().map(Ok));
            }
            Ok(v) => out.push(Ok(v)),
            Err(e) => out.push(Err(e.to_string())),
        }
    }
    out
}

/// The `ECRTokenRefresh` resources in `text` (from `file`); other kinds are skipped.
/// Resources without a namespace get `namespace`.
///
/// # Errors
/// One message per document that is not YAML or not a valid `ECRTokenRefresh`, naming
/// the file, the document and (when readable) the resource.
pub fn parse_resources(file: &str, text: &str, namespace: &str) -> (Vec<Sourced>, Vec<String>) {
    let (mut found, mut errors) = (Vec::new(), Vec::new());
    let docs = documents(text);
    let several = docs.len() > 1;
    for (i, doc) in docs.into_iter().enumerate() {
        let source = if several {
            format!("{file}#{}", i + 1)
        } else {
            file.to_string()
        };
        let value = match doc {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{source}: not YAML: {e}"));
                continue;
            }
        };
        if value.get("kind").and_then(|k| k.as_str()) != Some("ECRTokenRefresh") {
            continue;
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<no name>")
            .to_string();
        match serde_yaml::from_value::<ECRTokenRefresh>(value) {
            Ok(mut resource) => {
                if resource.metadata.namespace.is_none() {
                    resource.metadata.namespace = Some(namespace.to_string());
                }
                if resource.metadata.uid.is_none() {
                    resource.metadata.uid = Some(PLACEHOLDER_UID.to_string());
                }
                found.push(Sourced { source, resource });
            }
            Err(e) => errors.push(format!("{source}: ECRTokenRefresh {name}: {e}")),
        }
    }
    (found, errors)
}

impl ClusterState {
    /// The Namespaces and ServiceAccounts in `text` (a `List`, or documents); other kinds
    /// are skipped.
    ///
    /// # Errors
    /// A message naming the document that could not be read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut state = Self::default();
        for (i, doc) in documents(text).into_iter().enumerate() {
            let value = doc.map_err(|e| format!("document {}: not YAML: {e}", i + 1))?;
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("Namespace") => {
                    let ns: Namespace = serde_yaml::from_value(value)
                        .map_err(|e| format!("document {}: Namespace: {e}", i + 1))?;
                    state
                        .namespaces
                        .push(Arc::new(CachedNamespace::from_meta(&ns.metadata)));
                }
                Some("ServiceAccount") => {
                    let sa: ServiceAccount = serde_yaml::from_value(value)
                        .map_err(|e| format!("document {}: ServiceAccount: {e}", i + 1))?;
                    state.service_accounts.push(sa);
                }
                _ => {}
            }
        }
        Ok(state)
    }
}

/// Renders every resource of `resources` into `out`: what the operator configured by
/// `config` (with `policies`) would write, given the cluster's `state`. Returns the errors,
/// one line each (empty: everything rendered).
pub async fn render(
    resources: &[Sourced],
    config: &OperatorConfig,
    policies: &Policies,
    state: Option<&ClusterState>,
    out: &mut String,
) -> Vec<String> {
    let settings = config.controller_settings();
    let now = crate::ecr::whole_seconds(Timestamp::now());
    let mut errors = Vec::new();
    for s in resources {
        let cr = &s.resource;
        let namespace = cr.namespace().unwrap_or_default();
        let what = format!(
            "{}: ECRTokenRefresh {namespace}/{}",
            s.source,
            cr.name_any()
        );
        let spec = match cr.spec.validate() {
            Ok(spec) => spec,
            Err(e) => {
                errors.push(format!("{what}: InvalidSpec: {e}"));
                continue;
            }
        };
        let registries = spec.registries();
        let identity = spec.identity(&namespace);
        if let Err(denial) = settings.access.check(&namespace, &registries, &identity) {
            errors.push(format!("{what}: NotPermitted: {denial}"));
            continue;
        }
        let info = controller::cr_info(cr, &spec);
        let selection = controller::selection(cr);
        if let Err(e) = policies.check_selection(&selection) {
            errors.push(format!("{what}: PolicyFailed: {e}"));
            continue;
        }
        let chosen = match targets::resolve(
            policies,
            &selection,
            &info,
            &namespace,
            state.map(|st| st.namespaces.as_slice()),
            &settings.fanout_sources,
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{what}: PolicyFailed: {e}"));
                continue;
            }
        };
        let hosts: Vec<String> = registries.iter().map(|r| r.host().to_string()).collect();
        let layout = Layout::new(&spec.template, hosts);
        let mut expanded = Vec::new();
        let mut too_long = None;
        for t in &chosen {
            match layout.expand(t.clone()) {
                Ok(parts) => expanded.extend(parts),
                Err(e) => too_long = Some(e),
            }
        }
        if let Some(e) = too_long {
            errors.push(format!("{what}: InvalidSpec: {e}"));
            continue;
        }
        let entries = registries
            .iter()
            .map(|r| {
                let held = HeldToken {
                    key: TokenKey::of(&TokenRequest::for_registry(r, &identity)),
                    token: AuthorizationToken {
                        username: "AWS".into(),
                        password: SecretString::from(PLACEHOLDER_PASSWORD.to_string()),
                        expires_at: now + jiff::SignedDuration::from_hours(12),
                        proxy_endpoint: None,
                    },
                    fetched_at: now,
                };
                (r.host().to_string(), Arc::new(held))
            })
            .collect();
        let Some(credentials) = Credentials::new(entries) else {
            continue;
        };

        let _ = writeln!(out, "# {what}");
        describe_decisions(out, cr, &selection, &chosen, &layout);
        if cr.spec.suspend {
            let _ = writeln!(
                out,
                "# spec.suspend is true: nothing is written while it stays so; when resumed:"
            );
        }
        let served: BTreeSet<SecretTarget> = expanded.iter().map(|(t, _)| t.clone()).collect();
        describe_service_accounts(out, cr, state, &served);
        for (target, part) in &expanded {
            let rendered = layout.render(cr, target, *part, &credentials);
            out.push_str("---\n");
            out.push_str(&secret_yaml(rendered));
        }
    }
    errors
}

/// The policies' decisions as comment lines.
fn describe_decisions(
    out: &mut String,
    cr: &ECRTokenRefresh,
    selection: &crate::policy::PolicySelection,
    chosen: &[SecretTarget],
    layout: &Layout,
) {
    let policy = |p: &Option<String>| match p {
        Some(name) => format!("plugin {name}"),
        None => "built-in".to_string(),
    };
    let namespaces: Vec<&str> = chosen.iter().map(|t| t.namespace.as_str()).collect();
    let _ = writeln!(
        out,
        "# fan-out ({}): {} namespace(s): {}",
        policy(&selection.fanout),
        namespaces.len(),
        namespaces.join(", ")
    );
    for t in chosen {
        let _ = writeln!(
            out,
            "# naming ({}): {} -> Secret {}",
            policy(&selection.naming),
            t.namespace,
            t.name
        );
    }
    let _ = writeln!(
        out,
        "# format {} ({})",
        layout.format().as_str(),
        if cr.spec.secret_template.is_some() {
            "spec.secretTemplate"
        } else {
            "default"
        }
    );
}

/// The ServiceAccount changes as comment lines.
fn describe_service_accounts(
    out: &mut String,
    cr: &ECRTokenRefresh,
    state: Option<&ClusterState>,
    served: &BTreeSet<SecretTarget>,
) {
    if cr.spec.service_accounts.is_empty() {
        return;
    }
    let owner = Owner::of(cr);
    let named: BTreeSet<&str> = cr
        .spec
        .service_accounts
        .iter()
        .map(String::as_str)
        .collect();
    let namespaces: BTreeSet<&str> = served.iter().map(|t| t.namespace.as_str()).collect();
    let views: Vec<ServiceAccountView> = state
        .map(|st| st.service_accounts.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|sa| {
            named.contains(sa.name_any().as_str())
                && namespaces.contains(sa.namespace().unwrap_or_default().as_str())
        })
        .map(|sa| ServiceAccountView {
            namespace: sa.namespace().unwrap_or_default(),
            name: sa.name_any(),
            resource_version: sa.resource_version().unwrap_or_default(),
            pull_secrets: sa
                .image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect(),
            added: controller::added_pull_secrets(sa),
        })
        .collect();
    let ops = plan::pull_secret_ops(&owner.uid, &cr.spec.service_accounts, &views, served);
    for op in &ops {
        let _ = writeln!(
            out,
            "# ServiceAccount {}/{}: imagePullSecrets -> [{}]",
            op.namespace,
            op.service_account,
            op.pull_secrets.join(", ")
        );
    }
    for ns in &namespaces {
        for name in &named {
            if !views.iter().any(|v| v.namespace == *ns && v.name == *name) {
                let _ = writeln!(
                    out,
                    "# ServiceAccount {ns}/{name}: not in the cluster state; patched once it exists"
                );
            }
        }
    }
}

/// A rendered Secret as YAML, its data as `stringData`; hash and expiry annotations are
/// placeholders (they depend on the token).
fn secret_yaml(mut s: Secret) -> String {
    if let Some(a) = s.metadata.annotations.as_mut() {
        for key in [secret::DATA_HASH_ANNOTATION, secret::EXPIRES_AT_ANNOTATION] {
            if let Some(v) = a.get_mut(key) {
                *v = "<set when written>".to_string();
            }
        }
    }
    let string_data = s.data.take().map(|d| {
        d.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    });
    s.string_data = string_data;
    let mut value = serde_json::to_value(&s).unwrap_or_default();
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    let ordered = serde_json::json!({
        "apiVersion": value["apiVersion"],
        "kind": value["kind"],
        "metadata": value["metadata"],
        "type": value["type"],
        "stringData": value["stringData"],
    });
    serde_yaml::to_string(&ordered).unwrap_or_default()
}
