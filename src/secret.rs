//! Rendering the Secrets (the original `kubernetes.io/dockerconfigjson` one; the other
//! formats of `spec.secretTemplate` are laid out by [`crate::secret_format`]) and
//! recognising our own from their metadata alone.
//!
//! The format is the one `kubectl create secret docker-registry` writes; see
//! [Pull an Image from a Private Registry](https://kubernetes.io/docs/tasks/configure-pod-container/pull-image-private-registry/)
//! and [Secret types](https://kubernetes.io/docs/concepts/configuration/secret/#docker-config-secrets).
//!
//! Every Secret the operator writes carries, besides its data:
//! - labels `app.kubernetes.io/managed-by: ecr-token-refresh`,
//!   `ecr.aws.edenlab.io/owner-uid: <uid of the resource>` and
//!   `ecr.aws.edenlab.io/owner-namespace: <its namespace>` (label values are at most 63
//!   characters, so the resource's name, up to 253, is an annotation);
//! - annotations `ecr.aws.edenlab.io/owner-name`, `ecr.aws.edenlab.io/data-sha256` (see
//!   [`data_hash`]), `ecr.aws.edenlab.io/expires-at` (RFC 3339) and, with a template,
//!   `ecr.aws.edenlab.io/template-sha256`;
//! - in the resource's own namespace, a controller ownerReference (garbage collection).
//!
//! The watch of managed Secrets is metadata-only, so whether a Secret is ours and intact
//! is decided from its metadata ([`SecretMeta`]).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::api::ECRTokenRefresh;
use crate::ecr::{AuthorizationToken, Credentials};
use crate::intern::{Interner, intern};
use crate::object_id::{ResourceVersion, Uid};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "ecr-token-refresh";
/// Standard label marking the Secrets this operator manages; the controller watches only
/// Secrets carrying it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "ecr-token-refresh";
/// Label selector for the Secrets this operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=ecr-token-refresh";
/// Label holding the `metadata.uid` of the `ECRTokenRefresh` that wrote the Secret.
pub const OWNER_UID_LABEL: &str = "ecr.aws.edenlab.io/owner-uid";
/// Label naming the namespace of the `ECRTokenRefresh` that wrote the Secret.
pub const OWNER_NAMESPACE_LABEL: &str = "ecr.aws.edenlab.io/owner-namespace";
/// Annotation naming the `ECRTokenRefresh` that wrote the Secret (names may be longer than
/// a label value may be). Earlier versions wrote it as a label, which is still recognised.
pub const OWNER_NAME_ANNOTATION: &str = "ecr.aws.edenlab.io/owner-name";
/// Annotation holding the SHA-256 (hex) of the Secret's data ([`data_hash`]), to notice edits.
pub const DATA_HASH_ANNOTATION: &str = "ecr.aws.edenlab.io/data-sha256";
/// Annotation holding the SHA-256 (hex) of the labels and annotations the resource's
/// `spec.secretTemplate` added (absent without a template), to notice a template change.
pub const TEMPLATE_HASH_ANNOTATION: &str = "ecr.aws.edenlab.io/template-sha256";
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

/// The identity of the resource that owns Secrets: what ownership is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `metadata.name` of the `ECRTokenRefresh`.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its `metadata.uid` (empty only for objects never stored by an API server).
    pub uid: String,
}

impl Owner {
    /// The owner identity of `cr`.
    pub fn of(cr: &ECRTokenRefresh) -> Self {
        Self {
            name: cr.name_any(),
            namespace: cr.namespace().unwrap_or_default(),
            uid: cr.meta().uid.clone().unwrap_or_default(),
        }
    }
}

/// What the metadata of an existing Secret says, relative to one owner: the plain data the
/// reconcile decides on (from the metadata-only watch, never the Secret's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// Whether the Secret is ours for the owner: the owner-uid label names it (or, for
    /// Secrets written by earlier versions, the owner name and namespace labels do), or the
    /// owner is its controller ownerReference.
    pub ours: bool,
    /// Whether every label, annotation and ownerReference we write is there as written
    /// (without them the watch could lose sight of it, or garbage collection miss it).
    pub metadata_intact: bool,
    /// The data-hash annotation.
    pub data_hash: Option<String>,
    /// The expiry annotation, parsed.
    pub expires_at: Option<Timestamp>,
    /// Whether the Secret is being deleted (`deletionTimestamp` set).
    pub terminating: bool,
}

impl SecretMeta {
    /// Reads `meta` (of a Secret at `namespace`) relative to `owner`.
    pub fn read(meta: &ObjectMeta, owner: &Owner) -> Self {
        SecretFacts::from_meta(meta).relative_to(owner)
    }
}

/// [`SecretFacts::ownership`]: the owner-uid label names the owner, the owner is the
/// controller ownerReference, and whether either (or the legacy labels) makes it ours.
struct Ownership {
    by_uid: bool,
    controlled: bool,
    ours: bool,
}

/// What a Secret's metadata says, whoever asks: its identity, and the operator's own
/// labels, annotations and controller ownerReference as one shared [`SecretMarks`]. The managed-Secret
/// cache keeps one per Secret instead of its [`ObjectMeta`] (about a third of the memory:
/// no label and annotation maps); [`SecretFacts::relative_to`] turns it into the
/// [`SecretMeta`] a reconcile decides on.
///
/// What copies of one resource share is held once: the namespace and Secret names are
/// [interned](crate::intern) strings, and the operator's labels and annotations one
/// interned [`SecretMarks`], so 5,000 copies hold one heap copy of each, not 5,000.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFacts {
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.uid` (inline for the API server's UUIDs).
    pub uid: Uid,
    /// `metadata.resourceVersion` (inline).
    pub resource_version: ResourceVersion,
    /// Whether `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// The operator's labels, annotations and controller ownerReference, as found.
    pub marks: Arc<SecretMarks>,
}

/// The labels, annotations and controller ownerReference the operator writes on a Secret,
/// as found on one: the same in every copy of one resource (until someone edits a copy),
/// so cache entries share them ([`SecretMarks::shared`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SecretMarks {
    /// Whether [`MANAGED_BY_LABEL`] is [`MANAGED_BY_VALUE`].
    pub managed: bool,
    /// The [`OWNER_UID_LABEL`] label.
    pub owner_uid: Option<Box<str>>,
    /// The [`OWNER_NAMESPACE_LABEL`] label.
    pub owner_namespace: Option<Box<str>>,
    /// The owner name as a *label* (written by earlier versions, see
    /// [`OWNER_NAME_ANNOTATION`]).
    pub legacy_owner_name: Option<Box<str>>,
    /// The [`OWNER_NAME_ANNOTATION`] annotation.
    pub owner_name: Option<Box<str>>,
    /// uid of the controller ownerReference (the API server allows at most one: "Only one
    /// reference can have Controller set to true").
    pub controller_uid: Option<Box<str>>,
    /// The [`DATA_HASH_ANNOTATION`] annotation.
    pub data_hash: Option<Box<str>>,
    /// The [`EXPIRES_AT_ANNOTATION`] annotation, parsed (`None` when absent or not RFC 3339).
    pub expires_at: Option<Timestamp>,
}

static MARKS: LazyLock<Interner<SecretMarks>> = LazyLock::new(Interner::new);

impl SecretMarks {
    /// The marks in `meta`.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k));
        let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k));
        let boxed = |v: Option<&String>| v.map(|v| v.as_str().into());
        Self {
            managed: label(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE),
            owner_uid: boxed(label(OWNER_UID_LABEL)),
            owner_namespace: boxed(label(OWNER_NAMESPACE_LABEL)),
            legacy_owner_name: boxed(label(OWNER_NAME_ANNOTATION)),
            owner_name: boxed(annotation(OWNER_NAME_ANNOTATION)),
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.as_str().into()),
            data_hash: boxed(annotation(DATA_HASH_ANNOTATION)),
            expires_at: annotation(EXPIRES_AT_ANNOTATION).and_then(|t| t.parse().ok()),
        }
    }

    /// The one shared copy of these marks ([interned](crate::intern::Interner)).
    pub fn shared(self) -> Arc<SecretMarks> {
        MARKS.share(self)
    }
}

impl SecretFacts {
    /// The facts in `meta`.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        Self {
            name: intern(meta.name.as_deref().unwrap_or_default()),
            namespace: intern(meta.namespace.as_deref().unwrap_or_default()),
            uid: Uid::new(meta.uid.as_deref().unwrap_or_default()),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            terminating: meta.deletion_timestamp.is_some(),
            marks: SecretMarks::from_meta(meta).shared(),
        }
    }

    /// Where the Secret is.
    pub fn target(&self) -> SecretTarget {
        SecretTarget {
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }

    /// Whether the Secret is ours for `owner` (as [`SecretMeta::ours`] of
    /// [`SecretFacts::relative_to`], without copying anything).
    pub fn is_ours(&self, owner: &Owner) -> bool {
        self.ownership(owner).ours
    }

    /// How the Secret's owner labels and ownerReferences relate to `owner`.
    fn ownership(&self, owner: &Owner) -> Ownership {
        let is = |v: &Option<Box<str>>, want: &str| v.as_deref() == Some(want);
        let m = &*self.marks;
        let by_uid = !owner.uid.is_empty() && is(&m.owner_uid, &owner.uid);
        let legacy = m.owner_uid.is_none()
            && is(&m.legacy_owner_name, &owner.name)
            && is(&m.owner_namespace, &owner.namespace);
        let controlled = !owner.uid.is_empty() && is(&m.controller_uid, &owner.uid);
        Ownership {
            by_uid,
            controlled,
            ours: (m.managed && (by_uid || legacy)) || controlled,
        }
    }

    /// What the facts mean for `owner`: whether the Secret is ours (the owner-uid label
    /// names it, or, for Secrets written by earlier versions, the owner name and namespace
    /// labels do; or the owner is its controller ownerReference) and whether every label,
    /// annotation and ownerReference we write is there as written.
    pub fn relative_to(&self, owner: &Owner) -> SecretMeta {
        let is = |v: &Option<Box<str>>, want: &str| v.as_deref() == Some(want);
        let m = &*self.marks;
        let Ownership {
            by_uid,
            controlled,
            ours,
        } = self.ownership(owner);
        let in_own_namespace = *self.namespace == *owner.namespace;
        let metadata_intact = m.managed
            && by_uid
            && is(&m.owner_namespace, &owner.namespace)
            && m.legacy_owner_name.is_none()
            && is(&m.owner_name, &owner.name)
            && (!in_own_namespace || controlled);
        SecretMeta {
            uid: self.uid.to_string(),
            resource_version: self.resource_version.to_string(),
            ours,
            metadata_intact,
            data_hash: m.data_hash.as_deref().map(String::from),
            expires_at: m.expires_at,
            terminating: self.terminating,
        }
    }
}

/// The `.dockerconfigjson` document for `credentials`, one entry per registry host:
/// `{"auths":{"<registry>":{"username":"AWS","password":"<password>","auth":"<base64 AWS:password>"},…}}`
/// ([the format kubelet reads](https://kubernetes.io/docs/concepts/containers/images/#config-json);
/// keys in sorted order, so equal credentials give equal bytes).
pub fn docker_config_json(credentials: &Credentials) -> Vec<u8> {
    let auths: serde_json::Map<String, serde_json::Value> = credentials
        .entries()
        .iter()
        .map(|(host, held)| {
            let token = &held.token;
            let password = token.password.expose_secret();
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", token.username, password));
            (
                host.clone(),
                serde_json::json!({ "username": token.username, "password": password, "auth": auth }),
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap_or_default()
}

/// Hex SHA-256 of `bytes` (the value of [`DATA_HASH_ANNOTATION`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of [`DATA_HASH_ANNOTATION`] for a Secret holding `data`: the hex SHA-256 of
/// `.dockerconfigjson` when that is its only key (as every version wrote it), otherwise of
/// each key in order, as `key`, a NUL byte, the value's length (8 bytes, big-endian) and the
/// value.
pub fn data_hash<'a, V: AsRef<[u8]> + 'a>(
    data: impl IntoIterator<Item = (&'a String, &'a V)>,
) -> String {
    let entries: Vec<(&String, &V)> = data.into_iter().collect();
    if let [(key, value)] = entries.as_slice()
        && key.as_str() == DOCKER_CONFIG_KEY
    {
        return sha256_hex(value.as_ref());
    }
    let mut hasher = Sha256::new();
    for (key, value) in entries {
        let value = value.as_ref();
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of [`DATA_HASH_ANNOTATION`] for a Secret holding `data`, written with the
/// template whose hash is `template_hash` ([`TEMPLATE_HASH_ANNOTATION`]): [`data_hash`]
/// without a template; with one, the template hash is hashed in as one more entry (so a
/// template change changes it, and the Secret is rewritten).
pub fn content_hash<'a, V: AsRef<[u8]> + 'a>(
    data: impl IntoIterator<Item = (&'a String, &'a V)>,
    template_hash: Option<&str>,
) -> String {
    let Some(template) = template_hash else {
        return data_hash(data);
    };
    let key = "\0template".to_string();
    let entries: Vec<(&String, &[u8])> = data
        .into_iter()
        .map(|(k, v)| (k, v.as_ref()))
        .chain(std::iter::once((&key, template.as_bytes())))
        .collect();
    data_hash(entries.iter().map(|(k, v)| (*k, v)))
}

/// The labels every Secret of `owner` carries.
pub fn owner_labels(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (OWNER_UID_LABEL.to_string(), owner.uid.clone()),
        (OWNER_NAMESPACE_LABEL.to_string(), owner.namespace.clone()),
    ])
}

/// Label selector of every Secret of the owner with `uid`.
pub fn owner_selector(uid: &str) -> String {
    format!("{MANAGED_SELECTOR},{OWNER_UID_LABEL}={uid}")
}

/// Renders the Secret for `owner` at `target` around an already rendered
/// `.dockerconfigjson` (`data`) whose token expires at `expires_at`: see [`render_parts`].
pub fn render_data(
    owner: &ECRTokenRefresh,
    target: &SecretTarget,
    data: Vec<u8>,
    expires_at: Timestamp,
) -> Secret {
    render_parts(
        owner,
        target,
        Parts {
            type_: SECRET_TYPE,
            data: BTreeMap::from([(DOCKER_CONFIG_KEY.to_string(), data)]),
            expires_at,
            ..Parts::default()
        },
    )
}

/// What a Secret holds besides the owner's metadata.
#[derive(Default)]
pub struct Parts {
    /// Secret `type`.
    pub type_: &'static str,
    /// Its data (holds credentials: never logged).
    pub data: BTreeMap<String, Vec<u8>>,
    /// When the earliest token in it expires.
    pub expires_at: Timestamp,
    /// Labels of the template and the format; the owner's win over them.
    pub labels: BTreeMap<String, String>,
    /// Annotations of the template; the owner's win over them.
    pub annotations: BTreeMap<String, String>,
    /// The value of [`TEMPLATE_HASH_ANNOTATION`], when written with a template.
    pub template_hash: Option<String>,
}

/// Renders the Secret for `owner` at `target` holding `parts`: its type and data, the
/// template's labels and annotations with the owner labels and annotations over them (a
/// template cannot override or remove them) and, when the Secret is in the owner's
/// namespace, a controller ownerReference so it is garbage-collected with the owner.
/// (Copies in other namespaces cannot have one: ownerReferences do not cross namespaces.)
pub fn render_parts(owner: &ECRTokenRefresh, target: &SecretTarget, parts: Parts) -> Secret {
    let who = Owner::of(owner);
    let mut labels = parts.labels;
    labels.extend(owner_labels(&who));
    // The legacy owner-name label is ours too: never let a template set it.
    labels.remove(OWNER_NAME_ANNOTATION);
    let mut annotations = parts.annotations;
    annotations.retain(|k, _| !k.starts_with("ecr.aws.edenlab.io/"));
    annotations.extend([
        (OWNER_NAME_ANNOTATION.to_string(), who.name.clone()),
        (
            DATA_HASH_ANNOTATION.to_string(),
            content_hash(&parts.data, parts.template_hash.as_deref()),
        ),
        (
            EXPIRES_AT_ANNOTATION.to_string(),
            parts.expires_at.to_string(),
        ),
    ]);
    if let Some(hash) = parts.template_hash {
        annotations.insert(TEMPLATE_HASH_ANNOTATION.to_string(), hash);
    }
    let owner_references = (who.namespace == target.namespace)
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
        type_: Some(parts.type_.to_string()),
        data: Some(
            parts
                .data
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Renders the Secret for `owner` at `target` holding `credentials`, expiring with the
/// earliest of their tokens; see [`render_data`].
pub fn render(owner: &ECRTokenRefresh, target: &SecretTarget, credentials: &Credentials) -> Secret {
    render_data(
        owner,
        target,
        docker_config_json(credentials),
        credentials.expires_at,
    )
}

/// A merge patch turning an existing Secret of ours into `rendered`, with the existing
/// object's `uid` and `resourceVersion` as preconditions (a Secret replaced or changed since
/// it was observed is not touched: the API server answers 409 or 422). Labels and
/// annotations others added stay; a legacy owner-name label is removed.
pub fn update_patch(rendered: &Secret, uid: &str, resource_version: &str) -> serde_json::Value {
    let mut labels = serde_json::to_value(rendered.metadata.labels.clone().unwrap_or_default())
        .unwrap_or_default();
    labels[OWNER_NAME_ANNOTATION] = serde_json::Value::Null;
    let mut annotations =
        serde_json::to_value(rendered.metadata.annotations.clone().unwrap_or_default())
            .unwrap_or_default();
    if annotations.get(TEMPLATE_HASH_ANNOTATION).is_none() {
        annotations[TEMPLATE_HASH_ANNOTATION] = serde_json::Value::Null;
    }
    serde_json::json!({
        "metadata": {
            "uid": uid,
            "resourceVersion": resource_version,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": rendered.metadata.owner_references,
        },
        "data": rendered.data,
    })
}

/// Why a Secret cannot seed the held token (after a restart).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// The Secret is not of type `kubernetes.io/dockerconfigjson`.
    #[error("it is not a kubernetes.io/dockerconfigjson Secret")]
    Type,
    /// Its owner or labels are not ours.
    #[error("it is not controlled by this resource")]
    Owner,
    /// Its data does not match its data-hash annotation.
    #[error("its data does not match its data-sha256 annotation")]
    Hash,
    /// Its expiry annotation does not agree with `status.expiresAt`.
    #[error("its expiry does not agree with status.expiresAt")]
    Expiry,
    /// Its `.dockerconfigjson` lacks a complete entry for a registry, or has others.
    #[error("its .dockerconfigjson does not hold exactly one complete entry per registry")]
    Entry,
}

/// The tokens held in `secret`, the resource's own Secret, when it may seed the held
/// credentials after a restart: controlled by `owner` (controller ownerReference and owner
/// labels), its data matching its hash annotation, its expiry annotation equal to
/// `expected_expiry` (the resource's `status.expiresAt`, which only the operator writes),
/// and exactly one complete entry per host of `registries` under `auths` (`auth` being
/// base64 of `username:password`). Each token is returned, in the order of `registries`,
/// with `expected_expiry` as its expiry (the Secret records only the earliest).
///
/// # Errors
/// [`SeedError`] saying which check failed (never quoting the data).
pub fn seed_tokens(
    secret: &Secret,
    owner: &Owner,
    registries: &[&str],
    expected_expiry: Timestamp,
) -> Result<Vec<AuthorizationToken>, SeedError> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Err(SeedError::Type);
    }
    let meta = SecretMeta::read(&secret.metadata, owner);
    if !(meta.ours && meta.metadata_intact) {
        return Err(SeedError::Owner);
    }
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_KEY))
        .ok_or(SeedError::Entry)?;
    if meta.data_hash.as_deref() != Some(sha256_hex(&data.0).as_str())
        || secret.data.as_ref().is_some_and(|d| d.len() != 1)
    {
        return Err(SeedError::Hash);
    }
    if meta.expires_at != Some(expected_expiry) {
        return Err(SeedError::Expiry);
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        username: String,
        password: String,
        auth: String,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        auths: BTreeMap<String, Entry>,
    }
    let mut doc: Doc = serde_json::from_slice(&data.0).map_err(|_| SeedError::Entry)?;
    if doc.auths.len() != registries.len() {
        return Err(SeedError::Entry);
    }
    registries
        .iter()
        .map(|host| {
            let entry = doc.auths.remove(*host).ok_or(SeedError::Entry)?;
            let expected_auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", entry.username, entry.password));
            if entry.username.is_empty() || entry.password.is_empty() || entry.auth != expected_auth
            {
                return Err(SeedError::Entry);
            }
            Ok(AuthorizationToken {
                username: entry.username,
                password: secrecy::SecretString::from(entry.password),
                expires_at: expected_expiry,
                proxy_endpoint: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ECRTokenRefreshSpec;
    use secrecy::SecretString;

    #[test]
    fn cached_facts_stay_within_their_memory_budget_and_share_their_marks() {
        // One per managed Secret in the cache (5,000 after a 5,000-namespace fan-out):
        // what copies of one resource repeat is behind the shared `marks`.
        assert!(std::mem::size_of::<SecretFacts>() <= 96);
        let mut a = owner().metadata.clone();
        a.name = Some("a".into());
        a.labels = Some([(OWNER_UID_LABEL.to_string(), "budget-owner".to_string())].into());
        let mut b = a.clone();
        b.namespace = Some("elsewhere".into());
        let (fa, fb) = (SecretFacts::from_meta(&a), SecretFacts::from_meta(&b));
        assert!(Arc::ptr_eq(&fa.marks, &fb.marks));
        assert_eq!(fa.marks.owner_uid.as_deref(), Some("budget-owner"));
    }

    fn owner() -> ECRTokenRefresh {
        let mut cr = ECRTokenRefresh::new("ecr-credentials", ECRTokenRefreshSpec::sample());
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

    fn target(ns: &str) -> SecretTarget {
        SecretTarget {
            namespace: ns.into(),
            name: "ecr-credentials".into(),
        }
    }

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn creds_of(entries: &[(&str, &str, &str)]) -> Credentials {
        let entries = entries
            .iter()
            .map(|(host, region, pw)| {
                let held = crate::ecr::HeldToken {
                    key: crate::ecr::TokenKey::operator(region, false),
                    token: token(pw),
                    fetched_at: "2029-12-31T12:00:00Z".parse().unwrap(),
                };
                (host.to_string(), std::sync::Arc::new(held))
            })
            .collect();
        Credentials::new(entries).unwrap()
    }

    fn creds(host: &str, pw: &str) -> Credentials {
        creds_of(&[(host, "us-east-1", pw)])
    }

    #[test]
    fn several_registries_are_entries_of_one_document_and_seed_back_in_order() {
        let west = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
        let c = creds_of(&[
            (HOST, "us-east-1", "east"),
            (west, "eu-west-1", "west"),
            ("public.ecr.aws", "us-east-1", "pub"),
        ]);
        let s = render(&owner(), &target("default"), &c);
        let data = &s.data.as_ref().unwrap()[".dockerconfigjson"].0;
        let v: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(v["auths"].as_object().unwrap().len(), 3);
        assert_eq!(v["auths"][west]["password"], "west");
        assert_eq!(v["auths"]["public.ecr.aws"]["password"], "pub");
        let o = Owner::of(&owner());
        let expiry: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let hosts = [west, "public.ecr.aws", HOST];
        let seeded = seed_tokens(&s, &o, &hosts, expiry).unwrap();
        let pws: Vec<_> = seeded.iter().map(|t| t.password.expose_secret()).collect();
        assert_eq!(pws, ["west", "pub", "east"]);
        // A host the Secret lacks, or one it holds that is no longer wanted: no seed.
        assert_eq!(
            seed_tokens(&s, &o, &[HOST, west], expiry).err(),
            Some(SeedError::Entry)
        );
        let more = [
            HOST,
            west,
            "public.ecr.aws",
            "111111111111.dkr.ecr.us-east-1.amazonaws.com",
        ];
        assert_eq!(
            seed_tokens(&s, &o, &more, expiry).err(),
            Some(SeedError::Entry)
        );
    }

    #[test]
    fn renders_the_original_dockerconfigjson() {
        let s = render(&owner(), &target("default"), &creds(HOST, "pa:ss"));
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
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(s.labels()[MANAGED_BY_LABEL], "ecr-token-refresh");
        assert_eq!(s.labels()[OWNER_UID_LABEL], owner().metadata.uid.unwrap());
        assert_eq!(s.annotations()[OWNER_NAME_ANNOTATION], "ecr-credentials");
        assert_eq!(
            s.annotations()[EXPIRES_AT_ANNOTATION],
            "2030-01-01T00:00:00Z"
        );
    }

    #[test]
    fn long_names_stay_out_of_label_values() {
        let mut cr = owner();
        cr.metadata.name = Some("a".repeat(253));
        let s = render(&cr, &target("default"), &creds(HOST, "p"));
        assert!(
            s.labels().values().all(|v| v.len() <= 63),
            "{:?}",
            s.labels()
        );
        assert_eq!(s.annotations()[OWNER_NAME_ANNOTATION].len(), 253);
    }

    #[test]
    fn copies_in_other_namespaces_have_no_owner_reference() {
        let s = render(&owner(), &target("team-a"), &creds(HOST, "p"));
        assert!(s.metadata.owner_references.is_none());
        let m = SecretMeta::read(&s.metadata, &Owner::of(&owner()));
        assert!(m.ours && m.metadata_intact);
    }

    #[test]
    fn ownership_and_intact_metadata() {
        let o = Owner::of(&owner());
        let s = render(&owner(), &target("default"), &creds(HOST, "p"));
        let m = SecretMeta::read(&s.metadata, &o);
        assert!(m.ours && m.metadata_intact && !m.terminating);
        assert_eq!(m.expires_at, Some("2030-01-01T00:00:00Z".parse().unwrap()));

        // Labels stripped: still ours by the ownerReference, but due for a rewrite.
        let mut stripped = s.clone();
        stripped.metadata.labels = None;
        let m = SecretMeta::read(&stripped.metadata, &o);
        assert!(m.ours && !m.metadata_intact);

        // Another resource's uid (a forged or colliding Secret) is not ours.
        let other = Owner {
            uid: "another-uid".into(),
            ..o.clone()
        };
        let mut theirs = s.clone();
        theirs.metadata.owner_references = None;
        assert!(!SecretMeta::read(&theirs.metadata, &other).ours);

        // Written by an earlier version: owner name and namespace as labels.
        let mut legacy = theirs.clone();
        let labels = legacy.metadata.labels.as_mut().unwrap();
        labels.remove(OWNER_UID_LABEL);
        labels.insert(OWNER_NAME_ANNOTATION.into(), "ecr-credentials".into());
        let m = SecretMeta::read(&legacy.metadata, &o);
        assert!(m.ours && !m.metadata_intact);
    }

    #[test]
    fn the_update_patch_carries_preconditions_and_drops_the_legacy_label() {
        let s = render(&owner(), &target("default"), &creds(HOST, "p"));
        let p = update_patch(&s, "uid-1", "42");
        assert_eq!(p["metadata"]["uid"], "uid-1");
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert!(p["metadata"]["labels"][OWNER_NAME_ANNOTATION].is_null());
        assert!(p["data"][".dockerconfigjson"].is_string());
    }

    #[test]
    fn only_an_intact_own_secret_seeds_a_token() {
        let o = Owner::of(&owner());
        let expiry: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let good = render(&owner(), &target("default"), &creds(HOST, "pa:ss"));
        let t = seed_tokens(&good, &o, &[HOST], expiry).unwrap().remove(0);
        assert_eq!(t.password.expose_secret(), "pa:ss");

        let later: Timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            seed_tokens(&good, &o, &[HOST], later).err(),
            Some(SeedError::Expiry)
        );

        // Data rewritten with a recomputed hash but a forged password: the hash matches,
        // the expiry annotation agrees, so only the entry check stands: auth must match.
        let mut forged = good.clone();
        let doc = serde_json::json!({"auths": {HOST: {"username": "AWS", "password": "evil", "auth": "QVdTOnBhOnNz"}}});
        let bytes = serde_json::to_vec(&doc).unwrap();
        forged
            .annotations_mut()
            .insert(DATA_HASH_ANNOTATION.into(), sha256_hex(&bytes));
        forged
            .data
            .as_mut()
            .unwrap()
            .insert(DOCKER_CONFIG_KEY.into(), ByteString(bytes));
        assert_eq!(
            seed_tokens(&forged, &o, &[HOST], expiry).err(),
            Some(SeedError::Entry)
        );

        let mut edited = good.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert(DOCKER_CONFIG_KEY.into(), ByteString(b"{}".to_vec()));
        assert_eq!(
            seed_tokens(&edited, &o, &[HOST], expiry).err(),
            Some(SeedError::Hash)
        );

        let mut copy = good.clone();
        copy.metadata.owner_references = None;
        assert_eq!(
            seed_tokens(&copy, &o, &[HOST], expiry).err(),
            Some(SeedError::Owner)
        );
    }
}
