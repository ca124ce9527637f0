//! What the real API server validates before it stores an object, with the
//! same field paths and messages (`k8s.io/apimachinery/pkg/util/validation/field`
//! renders them; `errors.NewInvalid` wraps them in a 422 Status).
//!
//! Entry points: [`validate_create`] and [`validate_update`], which run the
//! generic `ObjectMeta` rules ([`meta`]) and the rules of the few built-in
//! types the stand-in knows ([`kinds`]). Custom resources get the generic
//! rules only (no schema), like a CRD with `x-kubernetes-preserve-unknown-fields`.

pub(crate) mod kinds;
pub(crate) mod meta;
pub(crate) mod names;

use serde_json::Value;

use crate::resource::ResourceType;

/// `field.ErrorType`: which kind of failure, rendered as its Go string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Invalid,
    Required,
    Forbidden,
    TooLong,
    NotSupported,
}

impl ErrorType {
    /// `ErrorType.String()`.
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Invalid => "Invalid value",
            ErrorType::Required => "Required value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::NotSupported => "Unsupported value",
        }
    }

    /// The `CauseType` of `Status.details.causes[].reason`.
    pub(crate) fn cause_type(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::NotSupported => "FieldValueNotSupported",
        }
    }
}

/// The offending value as Go's `field.Error` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BadValue {
    /// A string, printed quoted (`%q`).
    Str(String),
    /// A number or bool, printed bare (`%v`).
    Plain(String),
}

/// One `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub kind: ErrorType,
    /// Path such as `metadata.labels` or `data[.dockerconfigjson]`.
    pub field: String,
    pub value: BadValue,
    pub detail: String,
}

impl FieldError {
    /// `field.Invalid(path, "value", detail)`.
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorType::Invalid,
            field: field.into(),
            value: BadValue::Str(value.to_string()),
            detail: detail.into(),
        }
    }

    /// `field.Invalid` with a number/bool value printed bare.
    pub(crate) fn invalid_plain(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorType::Invalid,
            field: field.into(),
            value: BadValue::Plain(value.to_string()),
            detail: detail.into(),
        }
    }

    /// `field.Required(path, detail)`.
    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Required,
            field: field.into(),
            value: BadValue::Str(String::new()),
            detail: detail.into(),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Forbidden,
            field: field.into(),
            value: BadValue::Str(String::new()),
            detail: detail.into(),
        }
    }

    /// `field.TooLong(path, _, max)`: `may not be more than <max> bytes`.
    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            kind: ErrorType::TooLong,
            field: field.into(),
            value: BadValue::Str(String::new()),
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// `field.NotSupported(path, value, valid)`.
    pub(crate) fn not_supported(field: impl Into<String>, value: &str, valid: &[&str]) -> Self {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        Self {
            kind: ErrorType::NotSupported,
            field: field.into(),
            value: BadValue::Str(value.to_string()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    /// `ErrorBody()`: the message without the field path.
    pub(crate) fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong => {
                self.kind.as_str().to_string()
            }
            _ => match &self.value {
                BadValue::Str(v) => format!("{}: {}", self.kind.as_str(), go_quote(v)),
                BadValue::Plain(v) => format!("{}: {v}", self.kind.as_str()),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `Error()`: `<field>: <body>`.
    pub(crate) fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for the strings that occur here (JSON escaping is the same for
/// printable text).
pub(crate) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// `ErrorList.ToAggregate().Error()`: one message, or `[a, b]` with
/// duplicates dropped.
pub(crate) fn aggregate(errs: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// Validation of a new object: `strategy.Validate` (which includes the
/// type's `ValidateObjectMeta`), and only when that passes the generic
/// `ValidateObjectMetaAccessor` of `rest.BeforeCreate` (path-segment names).
pub(crate) fn validate_create(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let errs = kinds::validate(rt, obj);
    if !errs.is_empty() {
        return dedup(errs);
    }
    dedup(meta::validate_create(
        obj,
        names::NameRule::PathSegment,
        rt.namespaced,
    ))
}

/// Validation of an update, as `rest.BeforeUpdate` gathers it: the generic
/// create and update rules of `ObjectMeta` plus `strategy.ValidateUpdate`.
pub(crate) fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_create(new, names::NameRule::PathSegment, rt.namespaced);
    errs.extend(meta::validate_update(new, old));
    errs.extend(kinds::validate_update(rt, new, old));
    dedup(errs)
}

fn dedup(errs: Vec<FieldError>) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = Vec::with_capacity(errs.len());
    for e in errs {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_render_like_go() {
        let e = FieldError::invalid("metadata.name", "Bad", "must be lower case");
        assert_eq!(
            e.message(),
            "metadata.name: Invalid value: \"Bad\": must be lower case"
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).message(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            FieldError::required("eventTime", "").message(),
            "eventTime: Required value"
        );
        assert_eq!(
            FieldError::invalid_plain(
                "metadata.resourceVersion",
                "0x0",
                "must be specified for an update"
            )
            .message(),
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        );
        assert_eq!(
            FieldError::not_supported("propagationPolicy", "x", &["Foreground", "nil"]).message(),
            "propagationPolicy: Unsupported value: \"x\": supported values: \"Foreground\", \"nil\""
        );
        let a = FieldError::invalid("a", "1", "x");
        let b = FieldError::forbidden("b", "no");
        assert_eq!(aggregate(std::slice::from_ref(&a)), a.message());
        assert_eq!(
            aggregate(&[a.clone(), b, a]),
            "[a: Invalid value: \"1\": x, b: Forbidden: no]"
        );
    }
}
