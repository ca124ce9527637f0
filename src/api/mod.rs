//! The `ECRTokenRefresh` custom resource (`ecr.aws.edenlab.io/v1alpha1`): its spec, its
//! status and the validation the controller applies before any AWS call.

pub mod duration;
pub mod lenient;
pub mod registry;
pub mod template;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::{DurationError, parse_go_duration};
pub use template::{SecretFormat, SecretTemplate, TemplateMetadata};

/// Limits on the spec, the same in the CRD schema (rejected at admission) and in
/// [`ECRTokenRefreshSpec::validate`] (the controller enforces them too).
pub mod limits {
    /// Longest `spec.frequency`.
    pub const MAX_FREQUENCY: usize = 64;
    /// Longest `spec.region`.
    pub const MAX_REGION: usize = 32;
    /// Most entries in `spec.additionalRegistries`.
    pub const MAX_ADDITIONAL_REGISTRIES: usize = 16;
    /// Most entries in `spec.serviceAccounts`.
    pub const MAX_SERVICE_ACCOUNTS: usize = 32;
    /// Longest plugin name in `spec.policy`.
    pub const MAX_PLUGIN_NAME: usize = 63;
    /// Most entries in `spec.policy.parameters`.
    pub const MAX_PARAMETERS: usize = 32;
    /// Longest parameter name.
    pub const MAX_PARAMETER_NAME: usize = 63;
    /// Longest parameter value, in bytes.
    pub const MAX_PARAMETER_VALUE: usize = 1024;
}
pub use registry::{
    PUBLIC_HOST, Partition, Registry, RegistryError, RegistryHost, parse_registry,
    parse_registry_host,
};

use crate::ecr::Identity;

/// API group of the custom resources.
pub const GROUP: &str = "ecr.aws.edenlab.io";

/// Desired state: which ECR registry to keep a pull Secret for, and how often to refresh it.
///
/// Applying the original operator's sample unchanged works:
/// `{ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com, frequency: 8h, region: us-east-1}`
/// yields a `kubernetes.io/dockerconfigjson` Secret named after this resource, in its
/// namespace, owned by it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ecr.aws.edenlab.io",
    version = "v1alpha1",
    kind = "ECRTokenRefresh",
    plural = "ecrtokenrefreshes",
    singular = "ecrtokenrefresh",
    shortname = "ecrtr",
    category = "ecr",
    namespaced,
    status = "ECRTokenRefreshStatus",
    doc = "Keeps a kubernetes.io/dockerconfigjson Secret holding an Amazon ECR authorization token fresh.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Verified","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"CredentialsVerified\")].status"}"#,
    printcolumn = r#"{"name":"Registry","type":"string","jsonPath":".spec.ecrRegistry"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.servedNamespaces"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Format","type":"string","priority":1,"jsonPath":".spec.secretTemplate.format"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Last Refresh","type":"date","jsonPath":".status.lastUpdatedTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.region) || self.ecrRegistry.contains('.' + self.region + '.amazonaws.com')",
    "message": "region must match the region in ecrRegistry",
    "fieldPath": ".region"
}, {
    "rule": "!has(self.serviceAccounts) || size(self.serviceAccounts) == 0 || !has(self.secretTemplate) || !has(self.secretTemplate.format) || self.secretTemplate.format == 'dockerconfigjson'",
    "message": "serviceAccounts needs secretTemplate.format dockerconfigjson (imagePullSecrets must name image-pull Secrets)",
    "fieldPath": ".serviceAccounts"
}]))]
pub struct ECRTokenRefreshSpec {
    /// ECR private registry host, `<12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`,
    /// e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`. The account ID is used as the
    /// registry ID of `GetAuthorizationToken`; the host as written is the key under `auths`
    /// in the Secret.
    #[schemars(regex(pattern = registry::REGISTRY_HOST_PATTERN), length(max = 253))]
    pub ecr_registry: String,

    /// How often to fetch a new token, in Go duration syntax (`8h`, `1h30m`, `90m`, `1.5h`,
    /// `300s`); must be positive. The refresh happens at the earlier of this and the token's
    /// expiry minus a safety margin, so a long frequency never lets a token lapse
    /// (ECR tokens live 12 hours).
    #[schemars(
        regex(pattern = r"^\+?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$"),
        length(max = 64)
    )]
    pub frequency: String,

    /// AWS region of the registry, e.g. `us-east-1`. Optional: the region is read from
    /// `ecrRegistry`; when given it must match it (the original operator required it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"), length(max = 32))]
    pub region: String,

    /// More registries in the same Secret, each an entry under `auths` with a token of its
    /// own region: private ECR hosts of any account and region
    /// (`<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`) and `public.ecr.aws` (ECR
    /// Public). At most 16, no duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(regex(pattern = registry::ANY_REGISTRY_PATTERN), length(max = 253))
    )]
    pub additional_registries: Vec<String>,

    /// `true` stops refreshing: no AWS call, the Secrets are kept as they are, `Ready` keeps
    /// its last value and the `Suspended` condition says so. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Labels and annotations for every Secret written, and the format of the credentials
    /// (`dockerconfigjson`, `argocd-repository`, `basic`). Omitted: the original
    /// `kubernetes.io/dockerconfigjson` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// `true`: after each refresh, log in once to every registry with the new credentials
    /// (`GET https://<host>/v2/`, as a container runtime does before a pull) and report the
    /// answer in the `CredentialsVerified` condition (`Verified`, or `Rejected` with the
    /// host and HTTP status, or `Unreachable`). A failed check never removes or rewrites a
    /// Secret and never changes `Ready`. Omitted: the operator's `verify.default` (false
    /// unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,

    /// Whose credentials get the tokens. Omitted: the operator's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// ServiceAccounts (by name) in each namespace that receives the Secret whose
    /// `imagePullSecrets` should list it, e.g. `[default]`. Entries are added next to what
    /// is there and removed only when the operator removes its Secret. Empty (the
    /// default): ServiceAccounts are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub service_accounts: Vec<String>,

    /// Optional policy plugins, by the names the cluster owner registered in the operator's
    /// configuration. Omitted: the built-in policies (Secret named after this resource, in
    /// its namespace, exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,
}

/// The identity tokens are obtained with: a role the operator assumes, or a role assumed
/// with a token of a ServiceAccount of the resource's own namespace (as IRSA does for pods).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.serviceAccountRef) || !has(self.externalId)",
    "message": "externalId is not used with serviceAccountRef (AssumeRoleWithWebIdentity takes no external ID)",
    "fieldPath": ".externalId"
}]))]
pub struct AuthSpec {
    /// The role to assume, `arn:<partition>:iam::<account>:role/<path/name>`.
    #[schemars(
        regex(pattern = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[\w+=,.@/-]+$"),
        length(max = 2048)
    )]
    pub role_arn: String,
    /// The external ID the role's trust policy requires (2–1224 characters of
    /// `[\w+=,.@:/-]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[\w+=,.@:/-]{2,1224}$"), length(max = 1224))]
    pub external_id: Option<String>,
    /// The role session name (2–64 characters of `[\w+=,.@-]`). Default: `ecr-token-refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[\w+=,.@-]{2,64}$"), length(max = 64))]
    pub session_name: Option<String>,
    /// A ServiceAccount of this resource's namespace: its token (audience
    /// `sts.amazonaws.com`) is exchanged for the role's credentials
    /// (`AssumeRoleWithWebIdentity`), so the role's trust policy decides. Omitted: the
    /// operator assumes the role with its own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountRef>,
}

/// A ServiceAccount of the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceAccountRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which registered policy plugin decides each policy. A resource can only choose among
/// plugins the operator's configuration registers; it can never load a file.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Plugin deciding the Secret name. Omitted: the resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub naming: Option<String>,
    /// Plugin choosing the namespaces that receive the Secret. Omitted: the resource's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub fanout: Option<String>,
    /// Plugin deciding when to retry after a failure. Omitted: exponential backoff with jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub retry: Option<String>,
    /// String parameters passed to the plugins of this resource: at most 32, keys up to 63
    /// and values up to 1024 bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
            "additionalProperties" = {"type": "string", "maxLength": limits::MAX_PARAMETER_VALUE},
            "maxProperties" = limits::MAX_PARAMETERS,
            "x-kubernetes-validations" = [{
                "rule": "self.all(k, size(k) <= 63)",
                "message": "parameter names are at most 63 characters"
            }]
    ))]
    pub parameters: BTreeMap<String, String>,
}

/// Observed state. `phase`, `lastUpdatedTime` and `error` are kept from the original
/// operator; `conditions` follow the Kubernetes API conventions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ECRTokenRefreshStatus {
    /// `Ready` (the Secret holds a fresh token) or `Failed` (see `error` and the `Ready`
    /// condition). Absent until the first reconcile.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub phase: Option<Phase>,
    /// When the Secret was last written with a new token (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub last_updated_time: Option<Time>,
    /// The last error, cleared after a success. Never contains the token.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub error: Option<String>,
    /// When the token now in the Secret expires, as reported by ECR (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub expires_at: Option<Time>,
    /// When the operator plans the next refresh (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub next_refresh_time: Option<Time>,
    /// The Secrets this resource wrote.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::or_default"
    )]
    pub secrets: Vec<SecretReference>,
    /// How many namespaces hold a current copy of the Secret.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub served_namespaces: Option<u32>,
    /// Namespaces selected but not served, with why (e.g. a foreign Secret of that name).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::or_default"
    )]
    pub failed_namespaces: Vec<NamespaceFailure>,
    /// Failed attempts in a row (token, writes or deletes), reset by a full success; the
    /// backoff grows with it. Absent when the last attempt succeeded.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub consecutive_failures: Option<u32>,
    /// The `metadata.generation` this status describes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::or_default"
    )]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` says whether the Secret holds a fresh token.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::or_default"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Coarse lifecycle phase, kept for compatibility with the original operator.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// The Secret holds a fresh token.
    Ready,
    /// The last attempt failed; see `error`.
    Failed,
}

/// A Secret written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
}

/// A selected namespace that could not be served.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NamespaceFailure {
    /// The namespace.
    pub namespace: String,
    /// CamelCase reason, e.g. `SecretConflict`.
    pub reason: String,
    /// What went wrong.
    pub message: String,
}

/// The spec after validation: parsed values the controller works with.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    /// The registry host, account ID and region (`spec.ecrRegistry`).
    pub registry: RegistryHost,
    /// `spec.additionalRegistries`, parsed.
    pub additional: Vec<Registry>,
    /// `spec.frequency`, parsed.
    pub frequency: Duration,
    /// `spec.auth`, validated.
    pub auth: Option<AuthSpec>,
    /// `spec.secretTemplate`, validated (the default when omitted).
    pub template: SecretTemplate,
}

impl ValidSpec {
    /// Every registry of the Secret, `spec.ecrRegistry` first.
    pub fn registries(&self) -> Vec<Registry> {
        std::iter::once(Registry::Private(self.registry.clone()))
            .chain(self.additional.iter().cloned())
            .collect()
    }

    /// The identity a resource in `namespace` gets its tokens with.
    pub fn identity(&self, namespace: &str) -> Identity {
        match &self.auth {
            None => Identity::Operator,
            Some(AuthSpec {
                role_arn,
                service_account_ref: Some(sa),
                session_name,
                ..
            }) => Identity::WebIdentity {
                namespace: namespace.to_string(),
                service_account: sa.name.clone(),
                role_arn: role_arn.clone(),
                session_name: session_name.clone(),
            },
            Some(auth) => Identity::Role {
                arn: auth.role_arn.clone(),
                external_id: auth.external_id.clone(),
                session_name: auth.session_name.clone(),
            },
        }
    }
}

/// A spec field that failed validation. The message names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct SpecError {
    /// The JSON name of the field, e.g. `frequency`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ECRTokenRefreshSpec {
    /// The original operator's sample: `ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com`,
    /// `frequency: 8h`, `region: us-east-1`, every optional field left out.
    pub fn sample() -> Self {
        Self {
            ecr_registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
            frequency: "8h".into(),
            region: "us-east-1".into(),
            service_accounts: vec![],
            policy: None,
            additional_registries: vec![],
            auth: None,
            suspend: false,
            secret_template: None,
            verify: None,
        }
    }

    /// `additionalRegistries` parsed: each a private registry host or `public.ecr.aws`, none
    /// twice (nor `ecrRegistry` again).
    fn additional_registries(&self) -> Result<Vec<Registry>, SpecError> {
        let field = "additionalRegistries";
        let mut seen = std::collections::BTreeSet::from([self.ecr_registry.as_str()]);
        let mut out = Vec::with_capacity(self.additional_registries.len());
        for (i, host) in self.additional_registries.iter().enumerate() {
            let parsed = parse_registry(host).map_err(|e| SpecError {
                field,
                message: format!("item {i}: {e}, or {PUBLIC_HOST}"),
            })?;
            if !seen.insert(host.as_str()) {
                return Err(SpecError {
                    field,
                    message: format!("item {i}: {host:?} is listed twice (or is ecrRegistry)"),
                });
            }
            out.push(parsed);
        }
        Ok(out)
    }

    /// `auth` checked: a role ARN in the partition of every registry, an external ID and a
    /// session name of the characters STS accepts, a valid ServiceAccount name.
    fn valid_auth(
        &self,
        partitions: impl Iterator<Item = Partition>,
    ) -> Result<Option<AuthSpec>, SpecError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let arn = &auth.role_arn;
        let bad_arn = || SpecError {
            field: "auth.roleArn",
            message: format!(
                "{arn:?} is not an IAM role ARN such as arn:aws:iam::123456789012:role/ecr-pull"
            ),
        };
        let rest = arn.strip_prefix("arn:").ok_or_else(bad_arn)?;
        let (partition, rest) = rest.split_once(":iam::").ok_or_else(bad_arn)?;
        let (account, name) = rest.split_once(":role/").ok_or_else(bad_arn)?;
        let role_partition = match partition {
            "aws" => Partition::Aws,
            "aws-cn" => Partition::AwsCn,
            "aws-us-gov" => Partition::AwsUsGov,
            _ => return Err(bad_arn()),
        };
        let sts_chars = |c: char, extra: &str| {
            c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) || extra.contains(c)
        };
        if account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
            || name.is_empty()
            || !name.chars().all(|c| sts_chars(c, "/"))
        {
            return Err(bad_arn());
        }
        for p in partitions {
            if p != role_partition {
                return Err(SpecError {
                    field: "auth.roleArn",
                    message: format!(
                        "{arn:?} is in partition {role_partition}, a registry is in {p}: a role gets tokens only in its own partition"
                    ),
                });
            }
        }
        if let Some(id) = &auth.external_id
            && (!(2..=1224).contains(&id.len()) || !id.chars().all(|c| sts_chars(c, ":/")))
        {
            return Err(SpecError {
                field: "auth.externalId",
                message: "must be 2 to 1224 characters of letters, digits and _+=,.@:/-".into(),
            });
        }
        if let Some(name) = &auth.session_name
            && (!(2..=64).contains(&name.len()) || !name.chars().all(|c| sts_chars(c, "")))
        {
            return Err(SpecError {
                field: "auth.sessionName",
                message: format!(
                    "{name:?} must be 2 to 64 characters of letters, digits and _+=,.@-"
                ),
            });
        }
        if auth.service_account_ref.is_some() && auth.external_id.is_some() {
            return Err(SpecError {
                field: "auth.externalId",
                message: "is not used with serviceAccountRef: AssumeRoleWithWebIdentity takes \
                          no external ID (the role's trust policy names the ServiceAccount)"
                    .into(),
            });
        }
        if let Some(sa) = &auth.service_account_ref
            && crate::policy::guard::check_secret_name(&sa.name).is_err()
        {
            return Err(SpecError {
                field: "auth.serviceAccountRef.name",
                message: format!("{:?} is not a valid ServiceAccount name", sa.name),
            });
        }
        Ok(Some(auth.clone()))
    }

    /// The size limits of [`limits`], checked before anything is parsed (so an oversized
    /// value is reported as such, quoted only in part).
    fn check_limits(&self) -> Result<(), SpecError> {
        let too_long = |field: &'static str, value: &str, max: usize| -> Result<(), SpecError> {
            if value.len() > max {
                let shown: String = value.chars().take(40).collect();
                return Err(SpecError {
                    field,
                    message: format!(
                        "is {} bytes long ({shown:?}…); at most {max} are allowed",
                        value.len()
                    ),
                });
            }
            Ok(())
        };
        too_long("ecrRegistry", &self.ecr_registry, 253)?;
        too_long("frequency", &self.frequency, limits::MAX_FREQUENCY)?;
        too_long("region", &self.region, limits::MAX_REGION)?;
        if self.additional_registries.len() > limits::MAX_ADDITIONAL_REGISTRIES {
            return Err(SpecError {
                field: "additionalRegistries",
                message: format!(
                    "has {} entries; at most {} are allowed",
                    self.additional_registries.len(),
                    limits::MAX_ADDITIONAL_REGISTRIES
                ),
            });
        }
        for host in &self.additional_registries {
            too_long("additionalRegistries", host, 253)?;
        }
        if let Some(auth) = &self.auth {
            too_long("auth.roleArn", &auth.role_arn, 2048)?;
        }
        if self.service_accounts.len() > limits::MAX_SERVICE_ACCOUNTS {
            return Err(SpecError {
                field: "serviceAccounts",
                message: format!(
                    "has {} entries; at most {} are allowed",
                    self.service_accounts.len(),
                    limits::MAX_SERVICE_ACCOUNTS
                ),
            });
        }
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        for (field, name) in [
            ("policy.naming", &policy.naming),
            ("policy.fanout", &policy.fanout),
            ("policy.retry", &policy.retry),
        ] {
            too_long(
                field,
                name.as_deref().unwrap_or(""),
                limits::MAX_PLUGIN_NAME,
            )?;
        }
        if policy.parameters.len() > limits::MAX_PARAMETERS {
            return Err(SpecError {
                field: "policy.parameters",
                message: format!(
                    "has {} entries; at most {} are allowed",
                    policy.parameters.len(),
                    limits::MAX_PARAMETERS
                ),
            });
        }
        for (k, v) in &policy.parameters {
            too_long("policy.parameters", k, limits::MAX_PARAMETER_NAME)?;
            too_long("policy.parameters", v, limits::MAX_PARAMETER_VALUE)?;
        }
        Ok(())
    }

    /// Validates the spec the way admission would, and more (the region must agree with
    /// the host).
    ///
    /// # Errors
    /// The first [`SpecError`] found, naming the field.
    pub fn validate(&self) -> Result<ValidSpec, SpecError> {
        self.check_limits()?;
        let registry = parse_registry_host(&self.ecr_registry).map_err(|e| SpecError {
            field: "ecrRegistry",
            message: e.to_string(),
        })?;
        let frequency = parse_go_duration(&self.frequency).map_err(|e| SpecError {
            field: "frequency",
            message: e.to_string(),
        })?;
        if !self.region.is_empty() && !registry::is_region(&self.region) {
            return Err(SpecError {
                field: "region",
                message: format!("{:?} is not an AWS region such as us-east-1", self.region),
            });
        }
        if !self.region.is_empty() && self.region != registry.region {
            return Err(SpecError {
                field: "region",
                message: format!(
                    "{:?} does not match the region {:?} of ecrRegistry {:?}",
                    self.region, registry.region, self.ecr_registry
                ),
            });
        }
        for (i, sa) in self.service_accounts.iter().enumerate() {
            if crate::policy::guard::check_secret_name(sa).is_err() {
                return Err(SpecError {
                    field: "serviceAccounts",
                    message: format!("item {i}: {sa:?} is not a valid ServiceAccount name"),
                });
            }
        }
        let additional = self.additional_registries()?;
        let auth = self.valid_auth(
            std::iter::once(registry.partition).chain(additional.iter().map(Registry::partition)),
        )?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, sa) in self.service_accounts.iter().enumerate() {
            if !seen.insert(sa) {
                return Err(SpecError {
                    field: "serviceAccounts",
                    message: format!("item {i}: {sa:?} is listed twice"),
                });
            }
        }
        let template = self.secret_template.clone().unwrap_or_default();
        template.validate()?;
        if !template.format.is_default() && !self.service_accounts.is_empty() {
            return Err(SpecError {
                field: "serviceAccounts",
                message: format!(
                    "needs secretTemplate.format dockerconfigjson: imagePullSecrets must name \
                     image-pull Secrets, and format {} writes none",
                    template.format.as_str()
                ),
            });
        }
        if let Some(policy) = &self.policy {
            for (field, name) in [
                ("policy.naming", &policy.naming),
                ("policy.fanout", &policy.fanout),
                ("policy.retry", &policy.retry),
            ] {
                if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                    return Err(SpecError {
                        field,
                        message: "is empty; name a registered plugin or omit the field".into(),
                    });
                }
            }
        }
        Ok(ValidSpec {
            registry,
            additional,
            frequency,
            auth,
            template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ECRTokenRefreshSpec {
        serde_yaml::from_str(
            "ecrRegistry: 123456789012.dkr.ecr.us-east-1.amazonaws.com\nfrequency: 8h\nregion: us-east-1\n",
        )
        .unwrap()
    }

    #[test]
    fn the_original_sample_is_valid() {
        let v = sample().validate().unwrap();
        assert_eq!(v.frequency, Duration::from_secs(8 * 3600));
        assert_eq!(v.registry.account_id, "123456789012");
        assert_eq!(sample().policy, None);
    }

    #[test]
    fn region_is_optional_and_additional_registries_and_auth_are_checked_naming_the_field() {
        let field = |yaml: &str| {
            let spec: ECRTokenRefreshSpec = serde_yaml::from_str(yaml).unwrap();
            spec.validate()
                .map(|_| ())
                .map_err(|e| (e.field, e.to_string()))
        };
        let base = "ecrRegistry: 123456789012.dkr.ecr.eu-west-1.amazonaws.com\nfrequency: 8h\n";
        assert_eq!(field(base), Ok(()), "region may be left out");
        let with = |extra: &str| field(&format!("{base}{extra}"));

        // additionalRegistries: any account and region, FIPS, China, GovCloud, ECR Public.
        let v: ECRTokenRefreshSpec = serde_yaml::from_str(&format!(
            "{base}additionalRegistries: [111111111111.dkr.ecr-fips.us-east-1.amazonaws.com, \
             222222222222.dkr.ecr.us-gov-west-1.amazonaws.com, public.ecr.aws]"
        ))
        .unwrap();
        let hosts: Vec<String> = v
            .validate()
            .unwrap()
            .registries()
            .iter()
            .map(|r| r.host().to_string())
            .collect();
        assert_eq!(hosts[0], "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(hosts[3], "public.ecr.aws");
        let e = with("additionalRegistries: [docker.io]").unwrap_err();
        assert_eq!(e.0, "additionalRegistries", "{e:?}");
        assert!(e.1.contains("item 0"), "{e:?}");
        let e = with("additionalRegistries: [123456789012.dkr.ecr.eu-west-1.amazonaws.com]");
        assert_eq!(
            e.unwrap_err().0,
            "additionalRegistries",
            "ecrRegistry again"
        );
        let e = with("additionalRegistries: [public.ecr.aws, public.ecr.aws]");
        assert_eq!(e.unwrap_err().0, "additionalRegistries");
        let many: Vec<String> = (0..17)
            .map(|i| format!("{:012}.dkr.ecr.us-east-1.amazonaws.com", i))
            .collect();
        let e = with(&format!("additionalRegistries: [{}]", many.join(", ")));
        assert_eq!(e.unwrap_err().0, "additionalRegistries");

        // auth.
        let role = "arn:aws:iam::111111111111:role/pull";
        assert_eq!(with(&format!("auth: {{roleArn: \"{role}\"}}")), Ok(()));
        let e = with("auth: {roleArn: \"arn:aws:iam::1111:role/pull\"}").unwrap_err();
        assert_eq!(e.0, "auth.roleArn");
        let e = with("auth: {roleArn: \"arn:aws-cn:iam::111111111111:role/pull\"}").unwrap_err();
        assert!(e.0 == "auth.roleArn" && e.1.contains("partition"), "{e:?}");
        let e = with(&format!(
            "auth: {{roleArn: \"{role}\", sessionName: \"a b\"}}"
        ));
        assert_eq!(e.unwrap_err().0, "auth.sessionName");
        let e = with(&format!(
            "auth: {{roleArn: \"{role}\", externalId: x1, serviceAccountRef: {{name: puller}}}}"
        ));
        assert_eq!(
            e.unwrap_err().0,
            "auth.externalId",
            "no external ID with web identity"
        );
        let e = with(&format!(
            "auth: {{roleArn: \"{role}\", serviceAccountRef: {{name: Not_A_Name}}}}"
        ));
        assert_eq!(e.unwrap_err().0, "auth.serviceAccountRef.name");

        // The identity: per namespace for a ServiceAccount, with the session name.
        let spec: ECRTokenRefreshSpec = serde_yaml::from_str(&format!(
            "{base}auth: {{roleArn: \"{role}\", sessionName: team-a, serviceAccountRef: {{name: puller}}}}"
        ))
        .unwrap();
        assert_eq!(
            spec.validate().unwrap().identity("team-a"),
            Identity::WebIdentity {
                namespace: "team-a".into(),
                service_account: "puller".into(),
                role_arn: role.into(),
                session_name: Some("team-a".into()),
            }
        );
        assert_eq!(
            sample().validate().unwrap().identity("x"),
            Identity::Operator
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = sample();
        s.region = "us-west-2".into();
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "region");
        assert!(
            e.to_string().contains("us-west-2") && e.to_string().contains("us-east-1"),
            "{e}"
        );

        let mut s = sample();
        s.frequency = "0s".into();
        assert_eq!(s.validate().unwrap_err().field, "frequency");

        let mut s = sample();
        s.ecr_registry = "docker.io".into();
        let e = s.validate().unwrap_err();
        assert!(e.to_string().starts_with("spec.ecrRegistry: "), "{e}");
    }

    #[test]
    fn oversized_and_look_alike_values_are_refused_naming_the_field() {
        let mut s = sample();
        s.frequency = format!("{}h", "9".repeat(100));
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "frequency");
        assert!(e.to_string().len() < 300, "{e}");

        let mut s = sample();
        s.service_accounts = (0..33).map(|i| format!("sa-{i}")).collect();
        assert_eq!(s.validate().unwrap_err().field, "serviceAccounts");
        let mut s = sample();
        s.service_accounts = vec!["default".into(), "default".into()];
        assert_eq!(s.validate().unwrap_err().field, "serviceAccounts");

        let mut s = sample();
        s.policy = Some(PolicySpec {
            parameters: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
            ..Default::default()
        });
        assert_eq!(s.validate().unwrap_err().field, "policy.parameters");
        s.policy = Some(PolicySpec {
            parameters: BTreeMap::from([("k".into(), "v".repeat(1025))]),
            ..Default::default()
        });
        assert_eq!(s.validate().unwrap_err().field, "policy.parameters");

        // Unicode look-alikes: full-width digits, a Cyrillic 'е', a non-ASCII hyphen.
        for host in [
            "１２３456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.еcr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us‐east‐1.amazonaws.com",
        ] {
            let mut s = sample();
            s.ecr_registry = host.into();
            assert_eq!(s.validate().unwrap_err().field, "ecrRegistry", "{host}");
        }
        let mut s = sample();
        s.region = "us-eаst-1".into(); // Cyrillic 'а'
        assert_eq!(s.validate().unwrap_err().field, "region");
        let mut s = sample();
        s.frequency = "８h".into();
        assert_eq!(s.validate().unwrap_err().field, "frequency");
    }

    #[test]
    fn a_status_that_does_not_fit_reads_as_absent_fields_never_an_error() {
        let cr: ECRTokenRefresh = serde_json::from_value(serde_json::json!({
            "apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"ecrRegistry": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                     "frequency": "8h", "region": "us-east-1"},
            "status": {"consecutiveFailures": 99_999_999_999u64, "servedNamespaces": -1,
                       "phase": "Whatever", "expiresAt": "not a time",
                       "secrets": [{"name": 1}], "lastUpdatedTime": "2026-01-01T00:00:00Z"}
        }))
        .unwrap();
        let st = cr.status.unwrap();
        assert_eq!(st.consecutive_failures, None);
        assert_eq!(st.served_namespaces, None);
        assert_eq!(st.phase, None);
        assert_eq!(st.expires_at, None);
        assert!(st.secrets.is_empty());
        assert!(st.last_updated_time.is_some());
    }

    #[test]
    fn status_serializes_in_the_original_shape() {
        let st = ECRTokenRefreshStatus {
            phase: Some(Phase::Ready),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&st).unwrap(),
            serde_json::json!({"phase": "Ready"})
        );
    }
}
