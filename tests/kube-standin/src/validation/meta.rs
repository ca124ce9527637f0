//! `ObjectMeta` rules of `k8s.io/apimachinery/pkg/api/validation/objectmeta.go`
//! (`ValidateObjectMetaAccessor`, `ValidateObjectMetaAccessorUpdate`) and
//! `ValidateLabels` of `pkg/apis/meta/v1/validation`.

use serde_json::{Map, Value};

use super::FieldError;
use super::names::{self, NameRule};

/// `TotalAnnotationSizeLimitB`: keys plus values of all annotations, in bytes.
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn string_map(obj: &Value, field: &str) -> Vec<(String, String)> {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn string_list(obj: &Value, field: &str) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `ValidateObjectMetaAccessor`: names, namespace, labels, annotations,
/// owner references and finalizers of an object being created (and, with
/// [`NameRule::PathSegment`], the generic pass every write gets).
pub(crate) fn validate_create(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = meta_str(obj, "generateName");
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                msg,
            ));
        }
    }
    let name = meta_str(obj, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in rule.check(name, false) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    let namespace = meta_str(obj, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::dns1123_label(namespace) {
                errs.push(FieldError::invalid("metadata.namespace", namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(labels(obj));
    errs.extend(annotations(obj));
    errs.extend(owner_references(obj));
    errs.extend(finalizers(obj));
    errs
}

/// `ValidateObjectMetaAccessorUpdate`: immutable metadata, no new
/// finalizers once deletion started, and labels/annotations/owners again.
pub(crate) fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let old_meta = meta(old);
    if old_meta.is_some_and(|m| m.contains_key("deletionTimestamp")) {
        let old_f = string_list(old, "finalizers");
        let mut extra: Vec<String> = string_list(new, "finalizers")
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let quoted: Vec<String> = extra.iter().map(|f| super::go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            ));
        }
    }
    if meta_str(new, "resourceVersion").is_empty() {
        errs.push(FieldError::invalid(
            "metadata.resourceVersion",
            "",
            "must be specified for an update",
        ));
    }
    for field in ["name", "namespace", "uid"] {
        let (n, o) = (meta_str(new, field), meta_str(old, field));
        if n != o {
            errs.push(FieldError::invalid(
                format!("metadata.{field}"),
                n,
                "field is immutable",
            ));
        }
    }
    errs.extend(labels(new));
    errs.extend(annotations(new));
    errs.extend(owner_references(new));
    errs
}

/// `ValidateLabels`: qualified-name keys, label-value values.
pub(crate) fn labels(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in string_map(obj, "labels") {
        for msg in names::qualified_name(&k) {
            errs.push(FieldError::invalid("metadata.labels", &k, msg));
        }
        for msg in names::label_value(&v) {
            errs.push(FieldError::invalid("metadata.labels", &v, msg));
        }
    }
    errs
}

/// `ValidateAnnotations`: keys are qualified names (checked lower-cased),
/// keys and values together at most [`TOTAL_ANNOTATION_SIZE_LIMIT`] bytes.
pub(crate) fn annotations(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in string_map(obj, "annotations") {
        for msg in names::qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", &k, msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(
            "metadata.annotations",
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
    errs
}

/// `ValidateOwnerReferences`: apiVersion with a version, kind, name and uid
/// set; no core v1 Event as owner; at most one controller.
fn owner_references(obj: &Value) -> Vec<FieldError> {
    let refs = meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    let path = "metadata.ownerReferences";
    for r in &refs {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (api_version, kind, name, uid) = (s("apiVersion"), s("kind"), s("name"), s("uid"));
        let version = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => v.to_string(),
            [_, v] => v.to_string(),
            _ => String::new(),
        };
        if version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                &api_version,
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.kind"),
                &kind,
                "kind must not be empty",
            ));
        }
        if name.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                &name,
                "name must not be empty",
            ));
        }
        if uid.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.uid"),
                &uid,
                "uid must not be empty",
            ));
        }
        if api_version == "v1" && kind == "Event" {
            errs.push(FieldError::invalid_plain(
                path,
                r,
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.get("controller") == Some(&Value::Bool(true)) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid_plain(
                    path,
                    Value::Array(refs.clone()),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// `ValidateFinalizers`: qualified names; `orphan` and `foregroundDeletion`
/// not both.
fn finalizers(obj: &Value) -> Vec<FieldError> {
    let list = string_list(obj, "finalizers");
    let mut errs = Vec::new();
    for f in &list {
        for msg in names::qualified_name(f) {
            errs.push(FieldError::invalid("metadata.finalizers", f, msg));
        }
    }
    if list.iter().any(|f| f == "orphan") && list.iter().any(|f| f == "foregroundDeletion") {
        errs.push(FieldError::invalid_plain(
            "metadata.finalizers",
            format!("{list:?}"),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn create_rules() {
        let ok = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "x/y": ""},
                        "annotations": {"Example.COM/Key": "v"}, "finalizers": ["example.com/f"]}});
        assert!(validate_create(&ok, NameRule::Subdomain, true).is_empty());

        let bad = json!({"metadata": {"name": "A", "namespace": "Bad_NS",
                         "labels": {"bad key": "v", "k": "x".repeat(64)}}});
        let m = msgs(&validate_create(&bad, NameRule::Subdomain, true));
        assert!(
            m[0].starts_with("metadata.name: Invalid value: \"A\": a lowercase RFC 1123 subdomain")
        );
        assert!(m[1].starts_with(
            "metadata.namespace: Invalid value: \"Bad_NS\": a lowercase RFC 1123 label"
        ));
        assert!(
            m[2].starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist")
        );
        assert_eq!(
            m[3],
            format!(
                "metadata.labels: Invalid value: \"{}\": must be no more than 63 characters",
                "x".repeat(64)
            )
        );
        assert_eq!(m.len(), 4);

        let cluster = json!({"metadata": {"name": "c", "namespace": "x"}});
        assert_eq!(
            msgs(&validate_create(&cluster, NameRule::Subdomain, false)),
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
        let unnamed = json!({"metadata": {"namespace": "x"}});
        assert_eq!(
            msgs(&validate_create(&unnamed, NameRule::Subdomain, true)),
            ["metadata.name: Required value: name or generateName is required"]
        );
    }

    #[test]
    fn annotation_size_counts_keys_and_values() {
        let at_limit = json!({"metadata": {"name": "a", "annotations": {"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1)}}});
        assert!(annotations(&at_limit).is_empty());
        let over = json!({"metadata": {"name": "a", "annotations": {"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)}}});
        assert_eq!(
            msgs(&annotations(&over)),
            ["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn owner_references_and_finalizers() {
        let obj = json!({"metadata": {"name": "a", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1", "controller": true},
            {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": true}],
            "finalizers": ["bad finalizer"]}});
        let m = msgs(&validate_create(&obj, NameRule::Subdomain, false));
        assert_eq!(
            m[0],
            "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty"
        );
        assert_eq!(
            m[3],
            "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"
        );
        assert!(m[4].contains("Only one reference can have Controller set to true. Found \"true\" in references for ConfigMap/x and /"));
        assert!(m[5].starts_with("metadata.finalizers: Invalid value: \"bad finalizer\""));
    }

    #[test]
    fn update_rules() {
        let old = json!({"metadata": {"name": "a", "uid": "u1", "resourceVersion": "5",
                         "deletionTimestamp": "2020-01-01T00:00:00Z", "finalizers": ["a/x"]}});
        let new = json!({"metadata": {"name": "a", "uid": "u2", "resourceVersion": "5",
                         "finalizers": ["a/x", "b/y"]}});
        assert_eq!(
            msgs(&validate_update(&new, &old)),
            [
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"b/y\"}",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
            ]
        );
    }
}
