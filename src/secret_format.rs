//! How a resource's credentials are laid out in Secrets (`spec.secretTemplate`): which
//! Secrets a target becomes, their type, data, labels and annotations.
//!
//! - `dockerconfigjson` (the default): one `kubernetes.io/dockerconfigjson` Secret holding
//!   every registry ([`secret::docker_config_json`]).
//! - `argocd-repository`: per registry, an Argo CD
//!   [declarative repository Secret](https://argo-cd.readthedocs.io/en/stable/operator-manual/declarative-setup/#repositories)
//!   for OCI Helm charts (`type: helm`, `enableOCI: "true"`, `url`, `name`, `username`,
//!   `password`; label `argocd.argoproj.io/secret-type: repository`).
//! - `basic`: per registry, a
//!   [`kubernetes.io/basic-auth`](https://kubernetes.io/docs/concepts/configuration/secret/#basic-authentication-secret)
//!   Secret (`username`, `password`).
//!
//! The per-registry Secrets are named `<name>-<format>-<registry>` (see
//! [`Layout::expand`]), so that the Secrets of two formats never share a name: a Secret's
//! `type` is immutable, and a format change must write the new Secrets before the old ones
//! are removed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use secrecy::ExposeSecret;

use crate::api::{ECRTokenRefresh, Registry, SecretFormat, SecretTemplate, parse_registry};
use crate::ecr::Credentials;
use crate::secret::{self, Parts, SecretTarget};

/// Label Argo CD finds its repository Secrets by.
pub const ARGOCD_SECRET_TYPE_LABEL: &str = "argocd.argoproj.io/secret-type";
/// Secret type of the `basic` format.
pub const BASIC_AUTH_TYPE: &str = "kubernetes.io/basic-auth";
/// Secret type of the `argocd-repository` format (Argo CD reads any type; `Opaque` is what
/// its documentation uses).
pub const OPAQUE_TYPE: &str = "Opaque";
/// Longest Secret name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// Which part of the credentials one Secret holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Part {
    /// Every registry (the `dockerconfigjson` format).
    #[default]
    All,
    /// The registry at this index of the resource's registries (`spec.ecrRegistry` first).
    Registry(usize),
}

/// The layout of one resource's Secrets: format and template, and its registry hosts in
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    format: SecretFormat,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    template_hash: Option<String>,
    hosts: Vec<String>,
}

/// A Secret name that would be longer than a Kubernetes name may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.secretTemplate.format: the Secret name {name:?} ({len} characters) would be longer than 253 characters"
)]
pub struct NameTooLong {
    /// The name.
    pub name: String,
    /// Its length.
    pub len: usize,
}

impl Layout {
    /// The layout of a resource with `template` and registry `hosts` (`spec.ecrRegistry`
    /// first).
    pub fn new(template: &SecretTemplate, hosts: Vec<String>) -> Self {
        let (labels, annotations) = (template.labels(), template.annotations());
        let template_hash = (!labels.is_empty() || !annotations.is_empty()).then(|| {
            let labels = labels.iter().map(|(k, v)| (k, v.as_bytes()));
            let annotations = annotations.iter().map(|(k, v)| (k, v.as_bytes()));
            let keyed: Vec<(String, &[u8])> = labels
                .map(|(k, v)| (format!("label:{k}"), v))
                .chain(annotations.map(|(k, v)| (format!("annotation:{k}"), v)))
                .collect();
            secret::data_hash(keyed.iter().map(|(k, v)| (k, v)))
        });
        Self {
            format: template.format,
            labels,
            annotations,
            template_hash,
            hosts,
        }
    }

    /// The format.
    pub fn format(&self) -> SecretFormat {
        self.format
    }

    /// The value of the template-hash annotation the Secrets carry (`None` without template
    /// labels or annotations).
    pub fn template_hash(&self) -> Option<&str> {
        self.template_hash.as_deref()
    }

    /// The Secrets written for `target` (a namespace and the name the naming policy gave):
    /// `target` itself holding every registry for `dockerconfigjson`; otherwise one per
    /// registry, named `<name>-argocd-<registry>` or `<name>-basic-<registry>`, where
    /// `<registry>` is `<account>-<region>` (`-fips` added for a FIPS host) or `ecr-public`.
    ///
    /// # Errors
    /// [`NameTooLong`] when such a name would exceed 253 characters.
    pub fn expand(&self, target: SecretTarget) -> Result<Vec<(SecretTarget, Part)>, NameTooLong> {
        let tag = match self.format {
            SecretFormat::DockerConfigJson => return Ok(vec![(target, Part::All)]),
            SecretFormat::ArgocdRepository => "argocd",
            SecretFormat::Basic => "basic",
        };
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let name = format!("{}-{tag}-{}", target.name, slug(host));
                if name.len() > MAX_NAME {
                    return Err(NameTooLong {
                        len: name.len(),
                        name,
                    });
                }
                Ok((
                    SecretTarget {
                        namespace: target.namespace.clone(),
                        name,
                    },
                    Part::Registry(i),
                ))
            })
            .collect()
    }

    /// The Secret type of the format.
    pub fn secret_type(&self) -> &'static str {
        match self.format {
            SecretFormat::DockerConfigJson => secret::SECRET_TYPE,
            SecretFormat::ArgocdRepository => OPAQUE_TYPE,
            SecretFormat::Basic => BASIC_AUTH_TYPE,
        }
    }

    /// The data of the Secret holding `part` of `credentials` (holds the password: never
    /// logged). A part past the credentials' registries gives empty data.
    pub fn data(&self, credentials: &Credentials, part: Part) -> BTreeMap<String, Vec<u8>> {
        let index = match (self.format, part) {
            (SecretFormat::DockerConfigJson, _) | (_, Part::All) => {
                return BTreeMap::from([(
                    secret::DOCKER_CONFIG_KEY.to_string(),
                    secret::docker_config_json(credentials),
                )]);
            }
            (_, Part::Registry(i)) => i,
        };
        let Some((host, held)) = credentials.entries().get(index) else {
            return BTreeMap::new();
        };
        let token = &held.token;
        let password = token.password.expose_secret().as_bytes().to_vec();
        let mut data = BTreeMap::from([
            ("username".to_string(), token.username.clone().into_bytes()),
            ("password".to_string(), password),
        ]);
        if self.format == SecretFormat::ArgocdRepository {
            data.extend([
                ("type".to_string(), b"helm".to_vec()),
                ("enableOCI".to_string(), b"true".to_vec()),
                ("url".to_string(), host.clone().into_bytes()),
                ("name".to_string(), host.clone().into_bytes()),
            ]);
        }
        data
    }

    /// The data-hash annotation of the Secret holding `part` of `credentials` (its data
    /// and the template, see [`secret::content_hash`]).
    pub fn data_hash(&self, credentials: &Credentials, part: Part) -> String {
        secret::content_hash(&self.data(credentials, part), self.template_hash())
    }

    /// The Secret for `owner` at `target` holding `part` of `credentials`.
    pub fn render(
        &self,
        owner: &ECRTokenRefresh,
        target: &SecretTarget,
        part: Part,
        credentials: &Credentials,
    ) -> Secret {
        self.render_data(
            owner,
            target,
            self.data(credentials, part),
            credentials.expires_at,
        )
    }

    /// The Secret for `owner` at `target` around already rendered `data`.
    pub fn render_data(
        &self,
        owner: &ECRTokenRefresh,
        target: &SecretTarget,
        data: BTreeMap<String, Vec<u8>>,
        expires_at: Timestamp,
    ) -> Secret {
        let mut labels = self.labels.clone();
        if self.format == SecretFormat::ArgocdRepository {
            labels.insert(
                ARGOCD_SECRET_TYPE_LABEL.to_string(),
                "repository".to_string(),
            );
        }
        secret::render_parts(
            owner,
            target,
            Parts {
                type_: self.secret_type(),
                data,
                expires_at,
                labels,
                annotations: self.annotations.clone(),
                template_hash: self.template_hash.clone(),
            },
        )
    }
}

/// The registry part of a per-registry Secret name: `<account>-<region>` (`-fips` for a
/// FIPS host) or `ecr-public`; hosts that do not parse (never, after validation) give their
/// first label.
fn slug(host: &str) -> String {
    match parse_registry(host) {
        Ok(Registry::Private(r)) => {
            let fips = if r.fips { "-fips" } else { "" };
            format!("{}-{}{fips}", r.account_id, r.region)
        }
        Ok(Registry::Public) => "ecr-public".to_string(),
        Err(_) => host.split('.').next().unwrap_or(host).to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ecr::{AuthorizationToken, HeldToken, TokenKey};

    const EAST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const FIPS: &str = "210987654321.dkr.ecr-fips.us-west-2.amazonaws.com";

    fn creds() -> Credentials {
        let held = |pw: &str| {
            Arc::new(HeldToken {
                key: TokenKey::operator("us-east-1", false),
                token: AuthorizationToken {
                    username: "AWS".into(),
                    password: secrecy::SecretString::from(pw.to_string()),
                    expires_at: "2030-01-01T00:00:00Z".parse().unwrap(),
                    proxy_endpoint: None,
                },
                fetched_at: "2029-12-31T12:00:00Z".parse().unwrap(),
            })
        };
        Credentials::new(vec![
            (EAST.into(), held("pw-east")),
            (FIPS.into(), held("pw-fips")),
            ("public.ecr.aws".into(), held("pw-public")),
        ])
        .unwrap()
    }

    fn layout(yaml: &str) -> Layout {
        let template: SecretTemplate = serde_yaml::from_str(yaml).unwrap();
        Layout::new(
            &template,
            vec![EAST.into(), FIPS.into(), "public.ecr.aws".into()],
        )
    }

    fn target(name: &str) -> SecretTarget {
        SecretTarget {
            namespace: "apps".into(),
            name: name.into(),
        }
    }

    fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> String {
        String::from_utf8(data[key].clone()).unwrap()
    }

    #[test]
    fn dockerconfigjson_is_one_secret_with_every_registry() {
        let l = layout("{}");
        assert_eq!(
            l.expand(target("pull")).unwrap(),
            vec![(target("pull"), Part::All)]
        );
        let data = l.data(&creds(), Part::All);
        assert_eq!(data.keys().collect::<Vec<_>>(), [".dockerconfigjson"]);
        assert_eq!(
            data[".dockerconfigjson"],
            secret::docker_config_json(&creds())
        );
        assert_eq!(l.secret_type(), "kubernetes.io/dockerconfigjson");
        assert_eq!(l.template_hash(), None);
    }

    #[test]
    fn per_registry_formats_name_each_secret_after_its_registry_and_format() {
        let names = |yaml: &str| -> Vec<String> {
            layout(yaml)
                .expand(target("pull"))
                .unwrap()
                .into_iter()
                .map(|(t, _)| t.name)
                .collect()
        };
        assert_eq!(
            names("format: argocd-repository"),
            [
                "pull-argocd-123456789012-us-east-1",
                "pull-argocd-210987654321-us-west-2-fips",
                "pull-argocd-ecr-public"
            ]
        );
        assert_eq!(names("format: basic")[2], "pull-basic-ecr-public");
        let long = "x".repeat(240);
        let e = layout("format: basic").expand(target(&long)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.secretTemplate.format: the Secret name"),
            "{e}"
        );
    }

    #[test]
    fn argocd_repository_and_basic_hold_the_documented_keys() {
        let argocd = layout("format: argocd-repository");
        let data = argocd.data(&creds(), Part::Registry(1));
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["enableOCI", "name", "password", "type", "url", "username"]
        );
        assert_eq!(text(&data, "type"), "helm");
        assert_eq!(text(&data, "enableOCI"), "true");
        assert_eq!(text(&data, "url"), FIPS);
        assert_eq!(text(&data, "username"), "AWS");
        assert_eq!(text(&data, "password"), "pw-fips");
        assert_eq!(argocd.secret_type(), "Opaque");

        let basic = layout("format: basic");
        let data = basic.data(&creds(), Part::Registry(2));
        assert_eq!(data.keys().collect::<Vec<_>>(), ["password", "username"]);
        assert_eq!(text(&data, "password"), "pw-public");
        assert_eq!(basic.secret_type(), "kubernetes.io/basic-auth");
        assert!(basic.data(&creds(), Part::Registry(7)).is_empty());
        assert_ne!(
            basic.data_hash(&creds(), Part::Registry(0)),
            basic.data_hash(&creds(), Part::Registry(2))
        );
    }

    #[test]
    fn template_labels_land_but_ours_win_and_a_template_change_changes_its_hash() {
        let mut cr = ECRTokenRefresh::new(
            "pull",
            serde_yaml::from_str(
                "ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com\nfrequency: 8h\n",
            )
            .unwrap(),
        );
        cr.metadata.namespace = Some("apps".into());
        cr.metadata.uid = Some("uid-1".into());
        let l = layout(
            "format: argocd-repository\nmetadata:\n  labels: {team: a, app.kubernetes.io/managed-by: someone, argocd.argoproj.io/secret-type: cluster}\n  annotations: {argocd.argoproj.io/sync-options: Prune=false, ecr.aws.edenlab.io/expires-at: never}\n",
        );
        let (t, part) = l.expand(target("pull")).unwrap().remove(0);
        let s = l.render(&cr, &t, part, &creds());
        let labels = s.metadata.labels.unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ecr-token-refresh");
        assert_eq!(labels["argocd.argoproj.io/secret-type"], "repository");
        assert_eq!(labels[secret::OWNER_UID_LABEL], "uid-1");
        let annotations = s.metadata.annotations.unwrap();
        assert_eq!(
            annotations["argocd.argoproj.io/sync-options"],
            "Prune=false"
        );
        assert_eq!(
            annotations[secret::EXPIRES_AT_ANNOTATION],
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(
            annotations
                .get(secret::TEMPLATE_HASH_ANNOTATION)
                .map(String::as_str),
            l.template_hash()
        );
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let data: BTreeMap<String, Vec<u8>> =
            s.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
        assert_eq!(
            annotations[secret::DATA_HASH_ANNOTATION],
            secret::content_hash(&data, l.template_hash())
        );
        assert_eq!(
            annotations[secret::DATA_HASH_ANNOTATION],
            l.data_hash(&creds(), part)
        );
        assert_ne!(l.data_hash(&creds(), part), other_data_hash(&creds(), part));

        let other = layout("format: argocd-repository\nmetadata: {labels: {team: b}}\n");
        assert_ne!(other.template_hash(), l.template_hash());
        assert!(other.template_hash().is_some());
    }

    fn other_data_hash(credentials: &Credentials, part: Part) -> String {
        layout("format: argocd-repository").data_hash(credentials, part)
    }
}
