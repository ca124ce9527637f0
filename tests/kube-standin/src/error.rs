//! API errors rendered as Kubernetes `Status` objects, built the way
//! `k8s.io/apimachinery/pkg/api/errors` builds them (same codes, reasons,
//! message shapes and `details`).

use serde_json::{Value, json};

use crate::resource::ResourceType;
use crate::validation::FieldError;

/// One entry of `Status.details.causes` (a field-level validation failure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCause {
    /// Machine-readable cause, e.g. `FieldValueInvalid`, `FieldValueTooLong`.
    pub reason: String,
    /// The error without its field path, e.g. `Invalid value: "x": must be ...`.
    pub message: String,
    /// The field path, e.g. `metadata.labels` or `data[.dockerconfigjson]`.
    pub field: String,
}

/// `Status.details` (see `metav1.StatusDetails`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusDetails {
    /// Name of the object concerned (may be empty).
    pub name: String,
    /// API group (empty for the core group).
    pub group: String,
    /// Kind or resource, as the real server puts it (Invalid: the kind,
    /// NotFound/Conflict/delete success: the plural resource).
    pub kind: String,
    /// UID of the object (delete success only).
    pub uid: String,
    /// Field-level causes (Invalid only).
    pub causes: Vec<StatusCause>,
    /// Seconds a client should wait before retrying (429 answers).
    pub retry_after_seconds: Option<u32>,
}

/// An error as the API server would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, ...). Empty for
    /// errors the real server does not classify (it then omits `reason`).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status.
    pub details: Option<Box<StatusDetails>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {})", self.message, self.code, self.reason)
    }
}

impl std::error::Error for ApiError {}

/// The standard reason for an HTTP code.
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// The body limit of the real API server (`--max-request-bytes` of the
/// apiserver, `MaxRequestBodyBytes`, 3 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// etcd's default `--max-request-bytes` (1.5 MiB): a stored object larger
/// than this fails with `etcdserver: request is too large`.
pub const ETCD_MAX_REQUEST_BYTES: usize = 3 * 512 * 1024;

impl ApiError {
    /// A bare error with the standard reason for `code`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason_for_code(code).to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_resource(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            name: name.to_string(),
            group: rt.group.clone(),
            kind: rt.plural.clone(),
            ..StatusDetails::default()
        }));
        self
    }

    /// 404 `<plural[.group]> "<name>" not found` (`errors.NewNotFound`).
    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            format!("{} \"{}\" not found", rt.qualified_plural(), name),
        )
        .with_resource(rt, name)
    }

    /// 409 AlreadyExists (`errors.NewAlreadyExists`).
    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            409,
            format!("{} \"{}\" already exists", rt.qualified_plural(), name),
        )
        .with_resource(rt, name);
        e.reason = "AlreadyExists".into();
        e
    }

    /// 409 Conflict on the plural resource (`errors.NewConflict`).
    pub(crate) fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                rt.qualified_plural(),
                name,
                why
            ),
        )
        .with_resource(rt, name)
    }

    /// 409 Conflict on the kind (what `rest.BeforeDelete` reports for failed
    /// delete preconditions: it builds the GroupResource from the kind).
    pub(crate) fn conflict_on_kind(rt: &ResourceType, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                rt.qualified_kind(),
                name,
                why
            ),
        );
        e.details = Some(Box::new(StatusDetails {
            name: name.to_string(),
            group: rt.error_group().to_string(),
            kind: rt.kind.clone(),
            ..StatusDetails::default()
        }));
        e
    }

    /// 409 for a stale `metadata.resourceVersion` (`OptimisticLockErrorMsg`).
    pub(crate) fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 for a failed storage precondition, worded like the real server
    /// (`storage.Preconditions.Check` wrapped by `InterpretUpdateError`).
    pub(crate) fn storage_precondition(
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        why: &str,
    ) -> Self {
        Self::conflict(
            rt,
            name,
            &format!(
                "StorageError: invalid object, Code: 4, Key: {}, ResourceVersion: 0, AdditionalErrorMsg: {why}",
                rt.etcd_key(ns, name)
            ),
        )
    }

    /// 422 Invalid for an object of `rt` (`errors.NewInvalid` with the kind).
    pub(crate) fn invalid(rt: &ResourceType, name: &str, errs: &[FieldError]) -> Self {
        Self::invalid_kind(&rt.qualified_kind(), rt.error_group(), &rt.kind, name, errs)
    }

    /// 422 Invalid with an explicit qualified kind (`Kind.group`), group
    /// and kind, e.g. `DeleteOptions.meta.k8s.io` or the empty kind the
    /// real server uses for undecodable patches.
    pub(crate) fn invalid_kind(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        errs: &[FieldError],
    ) -> Self {
        let message = if errs.is_empty() {
            format!("{qualified_kind} {name:?} is invalid")
        } else {
            format!(
                "{qualified_kind} {name:?} is invalid: {}",
                crate::validation::aggregate(errs)
            )
        };
        let causes = errs
            .iter()
            .map(|e| StatusCause {
                reason: e.kind.cause_type().to_string(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        Self {
            code: 422,
            reason: "Invalid".into(),
            message,
            details: Some(Box::new(StatusDetails {
                name: name.to_string(),
                group: group.to_string(),
                kind: kind.to_string(),
                causes,
                ..StatusDetails::default()
            })),
        }
    }

    /// 400 BadRequest.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 400 for a body the real decoder rejects (`transformDecodeError`).
    pub(crate) fn undecodable(rt: &ResourceType, why: &str) -> Self {
        Self::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {why}",
            rt.kind, rt.version, rt.kind
        ))
    }

    /// 413 for a body over [`MAX_REQUEST_BODY_BYTES`]
    /// (`errors.NewRequestEntityTooLargeError`).
    pub(crate) fn body_too_large() -> Self {
        Self::new(
            413,
            format!("Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}"),
        )
    }

    /// What the real server answers when etcd refuses an object over
    /// [`ETCD_MAX_REQUEST_BYTES`]: the raw etcd error, not a Status the
    /// apiserver classifies, so code 500 and no reason.
    pub(crate) fn etcd_too_large() -> Self {
        Self {
            code: 500,
            reason: String::new(),
            message: "etcdserver: request is too large".into(),
            details: None,
        }
    }

    /// 429 TooManyRequests with `details.retryAfterSeconds`
    /// (`errors.NewTooManyRequests`).
    pub(crate) fn too_many_requests(message: impl Into<String>, retry_after: Option<u32>) -> Self {
        let mut e = Self::new(429, message);
        if let Some(secs) = retry_after {
            e.details = Some(Box::new(StatusDetails {
                retry_after_seconds: Some(secs),
                ..StatusDetails::default()
            }));
        }
        e
    }

    /// The `Status` JSON object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = self.details.as_deref() {
            s["details"] = details_json(d);
        }
        s
    }
}

/// `details` as JSON, empty fields omitted like Go's `omitempty`.
pub(crate) fn details_json(d: &StatusDetails) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in [
        ("name", &d.name),
        ("group", &d.group),
        ("kind", &d.kind),
        ("uid", &d.uid),
    ] {
        if !v.is_empty() {
            out.insert(k.into(), json!(v));
        }
    }
    if !d.causes.is_empty() {
        let causes: Vec<Value> = d
            .causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        out.insert("causes".into(), Value::Array(causes));
    }
    if let Some(secs) = d.retry_after_seconds {
        out.insert("retryAfterSeconds".into(), json!(secs));
    }
    Value::Object(out)
}

/// The `Status` a successful immediate DELETE returns for types whose
/// registry does not return the deleted object (`Store.finalizeDelete`).
pub(crate) fn delete_success(rt: &ResourceType, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details_json(&StatusDetails {
            name: name.to_string(),
            group: rt.group.clone(),
            kind: rt.plural.clone(),
            uid: uid.to_string(),
            ..StatusDetails::default()
        }),
    })
}
