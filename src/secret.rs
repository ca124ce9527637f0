//! Rendering the `kubernetes.io/dockerconfigjson` Secret and recognising our own.
//!
//! The format is the one `kubectl create secret docker-registry` writes; see
//! [Pull an Image from a Private Registry](https://kubernetes.io/docs/tasks/configure-pod-container/pull-image-private-registry/)
//! and [Secret types](https://kubernetes.io/docs/concepts/configuration/secret/#docker-config-secrets).

use std::collections::BTreeMap;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::api::ECRTokenRefresh;
use crate::ecr::AuthorizationToken;

/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ecr-token-refresh";
/// Standard label marking the Secrets this operator manages; the controller watches only
/// Secrets carrying it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "ecr-token-refresh";
/// Label selector for the Secrets this operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=ecr-token-refresh";
/// Label naming the `ECRTokenRefresh` that wrote the Secret.
pub const OWNER_NAME_LABEL: &str = "ecr.aws.edenlab.io/owner-name";
/// Label naming the namespace of the `ECRTokenRefresh` that wrote the Secret.
pub const OWNER_NAMESPACE_LABEL: &str = "ecr.aws.edenlab.io/owner-namespace";
/// Annotation holding the SHA-256 (hex) of `.dockerconfigjson`, to notice edits.
pub const DATA_HASH_ANNOTATION: &str = "ecr.aws.edenlab.io/data-sha256";
/// Annotation holding when the token in the Secret expires (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "ecr.aws.edenlab.io/expires-at";
/// Secret type of image-pull Secrets.
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Data key of image-pull Secrets.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// Where a Secret goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretTarget {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
}

impl std::fmt::Display for SecretTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who a Secret at the target belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// No Secret there yet.
    Absent,
    /// Written by this operator for this resource.
    Ours,
    /// Someone else's: never overwritten.
    Foreign,
}

/// The `.dockerconfigjson` document:
/// `{"auths":{"<registry>":{"username":"AWS","password":"<password>","auth":"<base64 AWS:password>"}}}`.
pub fn docker_config_json(registry: &str, token: &AuthorizationToken) -> Vec<u8> {
    let password = token.password.expose_secret();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", token.username, password));
    let doc = serde_json::json!({
        "auths": {
            registry: { "username": token.username, "password": password, "auth": auth }
        }
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Renders the Secret for `owner` at `target` holding a fresh token for `registry`; see
/// [`render_data`].
pub fn render(
    owner: &ECRTokenRefresh,
    target: &SecretTarget,
    registry: &str,
    token: &AuthorizationToken,
) -> Secret {
    render_data(
        owner,
        target,
        docker_config_json(registry, token),
        token.expires_at,
    )
}

/// Renders the Secret for `owner` at `target` around an already rendered
/// `.dockerconfigjson` (`data`) whose token expires at `expires_at`: type
/// `kubernetes.io/dockerconfigjson`, the managed-by and owner labels, the data hash and
/// expiry annotations, and, when the Secret is in the owner's namespace, a controller
/// ownerReference so it is garbage-collected with the owner. (Copies in other namespaces
/// cannot have one: ownerReferences do not cross namespaces.)
pub fn render_data(
    owner: &ECRTokenRefresh,
    target: &SecretTarget,
    data: Vec<u8>,
    expires_at: Timestamp,
) -> Secret {
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (OWNER_NAME_LABEL.to_string(), owner.name_any()),
        (
            OWNER_NAMESPACE_LABEL.to_string(),
            owner.namespace().unwrap_or_default(),
        ),
    ]);
    let annotations = BTreeMap::from([
        (DATA_HASH_ANNOTATION.to_string(), sha256_hex(&data)),
        (EXPIRES_AT_ANNOTATION.to_string(), expires_at.to_string()),
    ]);
    let owner_references = (owner.namespace().as_deref() == Some(target.namespace.as_str()))
        .then(|| owner.controller_owner_ref(&()))
        .flatten()
        .map(|r: OwnerReference| vec![r]);
    Secret {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_KEY.to_string(),
            ByteString(data),
        )])),
        ..Default::default()
    }
}

/// The `.dockerconfigjson` bytes and token expiry of an intact Secret of ours, to copy
/// into another namespace without asking ECR again. `None` if the Secret lacks either.
pub fn reusable_data(secret: &Secret) -> Option<(Vec<u8>, Timestamp)> {
    let data = secret.data.as_ref()?.get(DOCKER_CONFIG_KEY)?.0.clone();
    let expires_at = secret
        .annotations()
        .get(EXPIRES_AT_ANNOTATION)?
        .parse()
        .ok()?;
    Some((data, expires_at))
}

/// Classifies an existing Secret (or its absence) relative to `owner`: ours when it
/// carries the managed-by label and names `owner` in the owner labels, or when `owner` is
/// its controller ownerReference.
pub fn ownership(existing: Option<&Secret>, owner: &ECRTokenRefresh) -> Ownership {
    let Some(secret) = existing else {
        return Ownership::Absent;
    };
    // Our controller ownerReference is proof enough even if someone removed the labels;
    // such a Secret is not intact (see `is_intact`), so the next write restores them.
    if has_owner_labels(secret, owner) || is_controlled_by(secret, owner) {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

fn has_owner_labels(secret: &Secret, owner: &ECRTokenRefresh) -> bool {
    let labels = secret.labels();
    let is = |k: &str, v: &str| labels.get(k).map(String::as_str) == Some(v);
    is(MANAGED_BY_LABEL, MANAGED_BY_VALUE)
        && is(OWNER_NAME_LABEL, &owner.name_any())
        && is(
            OWNER_NAMESPACE_LABEL,
            &owner.namespace().unwrap_or_default(),
        )
}

fn is_controlled_by(secret: &Secret, owner: &ECRTokenRefresh) -> bool {
    owner.meta().uid.as_ref().is_some_and(|uid| {
        secret
            .owner_references()
            .iter()
            .any(|r| &r.uid == uid && r.controller == Some(true))
    })
}

/// Whether a Secret of ours still holds what we wrote for `registry`: the right type,
/// the data key, data matching the hash annotation, an entry for the registry, the
/// owner labels (without them the watch would lose sight of it), and a controller
/// ownerReference to `owner` when in its namespace. Anything else (an edit, a
/// stripped key) calls for a repair.
pub fn is_intact(secret: &Secret, owner: &ECRTokenRefresh, registry: &str) -> bool {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return false;
    }
    let Some(data) = secret.data.as_ref().and_then(|d| d.get(DOCKER_CONFIG_KEY)) else {
        return false;
    };
    let hash_ok = secret.annotations().get(DATA_HASH_ANNOTATION) == Some(&sha256_hex(&data.0));
    let has_registry = serde_json::from_slice::<serde_json::Value>(&data.0)
        .ok()
        .is_some_and(|v| v["auths"][registry]["auth"].is_string());
    let owned = secret.namespace() != owner.namespace()
        || owner.meta().uid.as_ref().is_some_and(|uid| {
            secret
                .owner_references()
                .iter()
                .any(|r| &r.uid == uid && r.controller == Some(true))
        });
    hash_ok && has_registry && owned && has_owner_labels(secret, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ECRTokenRefreshSpec;
    use secrecy::SecretString;

    fn owner() -> ECRTokenRefresh {
        let mut cr = ECRTokenRefresh::new(
            "ecr-credentials",
            ECRTokenRefreshSpec {
                ecr_registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
                frequency: "8h".into(),
                region: "us-east-1".into(),
                service_accounts: vec![],
                policy: None,
            },
        );
        cr.metadata.namespace = Some("default".into());
        cr.metadata.uid = Some("0b7c1c4e-0000-4000-8000-000000000001".into());
        cr
    }

    fn token(pw: &str) -> AuthorizationToken {
        AuthorizationToken {
            username: "AWS".into(),
            password: SecretString::from(pw.to_string()),
            expires_at: "2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap(),
            proxy_endpoint: None,
        }
    }

    fn target() -> SecretTarget {
        SecretTarget {
            namespace: "default".into(),
            name: "ecr-credentials".into(),
        }
    }

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    #[test]
    fn renders_the_original_dockerconfigjson() {
        let s = render(&owner(), &target(), HOST, &token("pa:ss"));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let data = &s.data.as_ref().unwrap()[".dockerconfigjson"].0;
        let v: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"auths": {HOST: {
                "username": "AWS", "password": "pa:ss", "auth": "QVdTOnBhOnNz"
            }}})
        );
        let refs = s.metadata.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "ECRTokenRefresh");
        assert_eq!(refs[0].api_version, "ecr.aws.edenlab.io/v1alpha1");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(s.labels()[MANAGED_BY_LABEL], "ecr-token-refresh");
        assert_eq!(
            s.annotations()[EXPIRES_AT_ANNOTATION],
            "2030-01-01T00:00:00Z"
        );
    }

    #[test]
    fn copies_in_other_namespaces_have_no_owner_reference() {
        let t = SecretTarget {
            namespace: "team-a".into(),
            name: "x".into(),
        };
        assert!(
            render(&owner(), &t, HOST, &token("p"))
                .metadata
                .owner_references
                .is_none()
        );
    }

    #[test]
    fn ownership_and_intactness() {
        let o = owner();
        assert_eq!(ownership(None, &o), Ownership::Absent);
        let mut s = render(&o, &target(), HOST, &token("p"));
        assert_eq!(ownership(Some(&s), &o), Ownership::Ours);
        assert!(is_intact(&s, &o, HOST));
        assert!(!is_intact(
            &s,
            &o,
            "999999999999.dkr.ecr.us-east-1.amazonaws.com"
        ));

        // Edited data no longer matches the hash.
        s.data
            .as_mut()
            .unwrap()
            .insert(DOCKER_CONFIG_KEY.into(), ByteString(b"{}".to_vec()));
        assert!(!is_intact(&s, &o, HOST));

        // Labels stripped: still ours by the ownerReference, but due for a rewrite.
        let mut stripped = render(&o, &target(), HOST, &token("p"));
        stripped.metadata.labels = None;
        assert_eq!(ownership(Some(&stripped), &o), Ownership::Ours);
        assert!(!is_intact(&stripped, &o, HOST));

        let foreign = Secret {
            metadata: ObjectMeta {
                name: Some("ecr-credentials".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ownership(Some(&foreign), &o), Ownership::Foreign);
    }
}
