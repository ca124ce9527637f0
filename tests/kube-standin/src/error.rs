//! API errors rendered as Kubernetes `Status` objects.

use serde_json::{Value, json};

use crate::resource::ResourceType;

/// An error as the API server would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status: (name, group, kind).
    pub details: Option<Box<(String, String, String)>>,
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

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(Box::new((
            name.to_string(),
            rt.group.clone(),
            rt.plural.clone(),
        )));
        self
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            format!("{} \"{}\" not found", rt.qualified_plural(), name),
        )
        .with_details(rt, name)
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            409,
            format!("{} \"{}\" already exists", rt.qualified_plural(), name),
        )
        .with_details(rt, name);
        e.reason = "AlreadyExists".into();
        e
    }

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
        .with_details(rt, name)
    }

    pub(crate) fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(422, format!("{} \"{}\" is invalid: {}", rt.kind, name, why))
            .with_details(rt, name)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// The `Status` JSON object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, group, kind)) = self.details.as_deref() {
            let mut d = json!({"name": name, "kind": kind});
            if !group.is_empty() {
                d["group"] = json!(group);
            }
            s["details"] = d;
        }
        s
    }
}
