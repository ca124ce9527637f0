//! Metadata-only responses: `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
//! (and `as=PartialObjectMetadataList`), which kube's `Api::get_metadata`,
//! `list_metadata`, `watch_metadata` and `metadata_watcher` send. The real
//! server answers with the object's `metadata` only
//! (`handlers/response.go`: `asPartialObjectMetadata`,
//! `asPartialObjectMetadataList`); Status objects pass unchanged. See
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables>
//! for the content-type negotiation this belongs to.

use serde_json::{Value, json};

use crate::error::ApiError;

/// What shape a response must have, from the `Accept` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The objects themselves (`application/json`, `*/*`, no header).
    Full,
    /// `PartialObjectMetadata` of this `apiVersion` (`meta.k8s.io/v1` or `v1beta1`).
    Partial(String),
    /// `PartialObjectMetadataList` of this `apiVersion`.
    PartialList(String),
}

/// Pick the first alternative of an `Accept` header the stand-in can serve
/// (Table and protobuf alternatives are skipped), or 406 like the real
/// server when none is acceptable.
pub(crate) fn negotiate(accept: &str) -> Result<Shape, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Shape::Full);
    }
    for alt in accept.split(',') {
        let mut parts = alt.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let (mut as_kind, mut group, mut version) = (None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("as", v)) => as_kind = Some(v.to_string()),
                Some(("g", v)) => group = Some(v.to_string()),
                Some(("v", v)) => version = Some(v.to_string()),
                _ => {}
            }
        }
        let Some(kind) = as_kind else {
            return Ok(Shape::Full);
        };
        let api_version = match (group.as_deref(), version.as_deref()) {
            (Some("meta.k8s.io"), Some(v @ ("v1" | "v1beta1"))) => format!("meta.k8s.io/{v}"),
            _ => continue,
        };
        match kind.as_str() {
            "PartialObjectMetadata" => return Ok(Shape::Partial(api_version)),
            "PartialObjectMetadataList" => return Ok(Shape::PartialList(api_version)),
            _ => continue,
        }
    }
    Err(ApiError::new(
        406,
        format!(
            "only the following media types are accepted: application/json, application/yaml (requested {accept:?})"
        ),
    ))
}

/// `meta.AsPartialObjectMetadata`: kind, apiVersion and the whole metadata.
pub(crate) fn object(obj: &Value, api_version: &str) -> Value {
    if obj.get("kind").and_then(Value::as_str) == Some("Status") {
        return obj.clone();
    }
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// `asPartialObjectMetadataList`: list metadata kept, items reduced.
pub(crate) fn list(list: &Value, api_version: &str) -> Value {
    let items: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|i| object(i, api_version)).collect())
        .unwrap_or_default();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": api_version,
        "metadata": list.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "items": items,
    })
}

/// Shape a single-object response; a list-shaped request for one object
/// is a 406 like the real server's.
pub(crate) fn shape_object(shape: &Shape, obj: Value, go_type: &str) -> Result<Value, ApiError> {
    match shape {
        Shape::Full => Ok(obj),
        Shape::Partial(v) => Ok(object(&obj, v)),
        Shape::PartialList(_) if obj.get("kind").and_then(Value::as_str) == Some("Status") => {
            Ok(obj)
        }
        Shape::PartialList(_) => Err(ApiError::new(
            406,
            format!(
                "you requested PartialObjectMetadataList, but the requested object is not a list ({go_type})"
            ),
        )),
    }
}

/// Shape a list response; an object-shaped request for a list is a 406.
pub(crate) fn shape_list(shape: &Shape, l: Value, go_type: &str) -> Result<Value, ApiError> {
    match shape {
        Shape::Full => Ok(l),
        Shape::PartialList(v) => Ok(list(&l, v)),
        Shape::Partial(_) => Err(ApiError::new(
            406,
            format!(
                "you requested PartialObjectMetadata, but the requested object is a list ({go_type})"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate("").unwrap(), Shape::Full);
        assert_eq!(negotiate("application/json").unwrap(), Shape::Full);
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1").unwrap(),
            Shape::Partial("meta.k8s.io/v1".into())
        );
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1").unwrap(),
            Shape::PartialList("meta.k8s.io/v1".into())
        );
        // kubectl asks for a Table first and falls back to JSON
        assert_eq!(
            negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json").unwrap(),
            Shape::Full
        );
        assert_eq!(
            negotiate("application/json;as=Table;v=v1;g=meta.k8s.io")
                .unwrap_err()
                .code,
            406
        );
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf")
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn reduction() {
        let secret = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"}, "data": {"k": "dg=="}});
        assert_eq!(
            object(&secret, "meta.k8s.io/v1"),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "s"}})
        );
        let l =
            json!({"kind": "SecretList", "metadata": {"resourceVersion": "5"}, "items": [secret]});
        let p = list(&l, "meta.k8s.io/v1");
        assert_eq!(p["kind"], "PartialObjectMetadataList");
        assert_eq!(p["metadata"]["resourceVersion"], "5");
        assert_eq!(p["items"][0]["kind"], "PartialObjectMetadata");
        assert!(p["items"][0].get("data").is_none());
        assert_eq!(
            shape_list(
                &Shape::Partial("meta.k8s.io/v1".into()),
                l,
                "*v1.SecretList"
            )
            .unwrap_err()
            .code,
            406
        );
    }
}
