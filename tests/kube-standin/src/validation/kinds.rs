//! Type-specific validation of the built-in types the stand-in serves,
//! after `pkg/apis/core/validation` (`ValidateSecret`, `ValidateConfigMap`,
//! `ValidateNamespace`, `ValidateEventCreate`/`Update`),
//! `pkg/apis/coordination/validation` (`ValidateLease`) and
//! `apiextensions-apiserver` (CRD names). Objects arrive here already
//! decoded and defaulted by [`crate::conversion`]: Secret data is canonical
//! base64 and `type` is set.

use serde_json::Value;

use super::names::NameRule;
use super::{FieldError, meta, names};
use crate::conversion::{base64_decoded_len, secret_type};
use crate::resource::ResourceType;

/// `core.MaxSecretSize`: total bytes of a Secret's (or ConfigMap's) data.
pub(crate) const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// `NoteLengthLimit` of Events (bytes).
pub(crate) const NOTE_LENGTH_LIMIT: usize = 1024;
/// `ReasonLengthLimit`, `ActionLengthLimit`, `ReportingInstanceLengthLimit`.
pub(crate) const EVENT_FIELD_LIMIT: usize = 128;

const SECRET_TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
const SECRET_TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";
const SECRET_TYPE_SSH_AUTH: &str = "kubernetes.io/ssh-auth";
const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";
const SECRET_TYPE_SA_TOKEN: &str = "kubernetes.io/service-account-token";

/// The name rule of a type (`ValidateNameFunc` of its strategy).
pub(crate) fn name_rule(rt: &ResourceType) -> NameRule {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => NameRule::Label,
        ("", "events") => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// `strategy.Validate` of `rt` for a new object (includes the type's
/// `ValidateObjectMeta` call where the real type has one).
pub(crate) fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = match (rt.group.as_str(), rt.plural.as_str()) {
        // Core v1 Events only get the legacy checks (no ObjectMeta rules
        // beyond the generic pass).
        ("", "events") => return legacy_event(obj, EventApi::CoreV1),
        _ => meta::validate_create(obj, name_rule(rt), rt.namespaced),
    };
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => errs.extend(secret(obj)),
        ("", "configmaps") => errs.extend(config_map(obj)),
        ("events.k8s.io", "events") => errs.extend(event_create(obj)),
        ("coordination.k8s.io", "leases") => errs.extend(lease(obj)),
        ("apiextensions.k8s.io", "customresourcedefinitions") => errs.extend(crd_name(obj)),
        _ => {}
    }
    errs
}

/// `strategy.ValidateUpdate` of `rt`, without the generic ObjectMeta update
/// rules (see [`super::validate_update`]).
pub(crate) fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => {
            let mut errs = immutable_str(new, old, "type", "type");
            errs.extend(immutable_data(new, old, &["data"]));
            errs.extend(validate(rt, new));
            errs
        }
        ("", "configmaps") => {
            let mut errs = immutable_data(new, old, &["data", "binaryData"]);
            errs.extend(validate(rt, new));
            errs
        }
        ("", "events") => legacy_event(new, EventApi::CoreV1),
        ("events.k8s.io", "events") => event_update(new, old),
        _ if rt.is_builtin() => validate(rt, new),
        // Custom resources: ObjectMeta update rules only (no schema here).
        _ => Vec::new(),
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn immutable_str(new: &Value, old: &Value, key: &str, path: &str) -> Vec<FieldError> {
    let (n, o) = (
        str_at(new, &format!("/{key}")),
        str_at(old, &format!("/{key}")),
    );
    if n == o {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, n, "field is immutable")]
    }
}

/// `immutable: true` Secrets and ConfigMaps keep their data and the flag.
fn immutable_data(new: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return Vec::new();
    }
    let mut errs = Vec::new();
    if new.get("immutable") != Some(&Value::Bool(true)) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        if new.get(*f) != old.get(*f) {
            errs.push(FieldError::forbidden(
                *f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

fn data_entries(obj: &Value, field: &str) -> Vec<(String, String)> {
    obj.get(field)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `ValidateSecret`: data keys, total size, and the rules of the
/// well-known types. <https://kubernetes.io/docs/concepts/configuration/secret/#secret-types>
fn secret(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = data_entries(obj, "data");
    let mut total = 0usize;
    for (k, v) in &data {
        for msg in names::config_map_key(k) {
            errs.push(FieldError::invalid(format!("data[{k}]"), k, msg));
        }
        total += base64_decoded_len(v);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.iter().any(|(key, _)| key == k);
    let decoded = |k: &str| {
        data.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| crate::conversion::base64_decode(v).ok())
            .unwrap_or_default()
    };
    match secret_type(obj) {
        SECRET_TYPE_SA_TOKEN => {
            let ann = obj
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ann.is_empty() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        t @ (SECRET_TYPE_DOCKERCFG | SECRET_TYPE_DOCKERCONFIGJSON) => {
            let key = if t == SECRET_TYPE_DOCKERCFG {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if !has(key) {
                errs.push(FieldError::required(format!("data[{key}]"), ""));
            } else if let Err(why) = json_object(&decoded(key)) {
                errs.push(FieldError::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    why,
                ));
            }
        }
        SECRET_TYPE_BASIC_AUTH if !has("username") && !has("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        SECRET_TYPE_SSH_AUTH if decoded("ssh-privatekey").is_empty() => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        SECRET_TYPE_TLS => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errs.push(FieldError::required(format!("data[{key}]"), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

/// Go's `json.Unmarshal(b, &map[string]interface{}{})`: the bytes must be
/// one JSON object. The error texts follow `encoding/json` for the usual
/// cases.
fn json_object(bytes: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(Value::Null) => Ok(()),
        Ok(other) => {
            let what = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            Err(format!(
                "json: cannot unmarshal {what} into Go value of type map[string]interface {{}}"
            ))
        }
        Err(e) if e.is_eof() => Err("unexpected end of JSON input".to_string()),
        Err(e) => {
            let offending = bytes
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .map(|b| *b as char)
                .unwrap_or(' ');
            if bytes.trim_ascii_start().first() == Some(&b'{') {
                Err(format!("invalid character in JSON object: {e}"))
            } else {
                Err(format!(
                    "invalid character '{offending}' looking for beginning of value"
                ))
            }
        }
    }
}

/// `ValidateConfigMap`: keys of `data` and `binaryData`, no key in both,
/// total size.
fn config_map(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = data_entries(obj, "data");
    let binary = data_entries(obj, "binaryData");
    let mut total = 0usize;
    for (k, v) in &data {
        for msg in names::config_map_key(k) {
            errs.push(FieldError::invalid(format!("data[{k}]"), k, msg));
        }
        total += v.len();
    }
    for (k, v) in &binary {
        for msg in names::config_map_key(k) {
            errs.push(FieldError::invalid(format!("binaryData[{k}]"), k, msg));
        }
        total += base64_decoded_len(v);
        if data.iter().any(|(dk, _)| dk == k) {
            errs.push(FieldError::invalid(
                format!("data[{k}]"),
                k,
                "duplicate of key present in binaryData",
            ));
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    errs
}

/// `ValidateLease`'s spec rules.
fn lease(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(d) = obj
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(FieldError::invalid_plain(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = obj
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
        && t < 0
    {
        errs.push(FieldError::invalid_plain(
            "spec.leaseTransitions",
            t,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// A CRD's name must be `<spec.names.plural>.<spec.group>`.
fn crd_name(obj: &Value) -> Vec<FieldError> {
    let name = str_at(obj, "/metadata/name");
    let expected = format!(
        "{}.{}",
        str_at(obj, "/spec/names/plural"),
        str_at(obj, "/spec/group")
    );
    if name == expected {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        )]
    }
}

/// Which API an Event is written through (field names differ).
#[derive(Clone, Copy, PartialEq, Eq)]
enum EventApi {
    CoreV1,
    EventsV1,
}

impl EventApi {
    /// JSON pointer of a field of the internal `core.Event`.
    fn pointer(self, internal: &str) -> &'static str {
        match (self, internal) {
            (EventApi::CoreV1, "involvedObject.namespace") => "/involvedObject/namespace",
            (EventApi::EventsV1, "involvedObject.namespace") => "/regarding/namespace",
            (EventApi::CoreV1, "reportingController") => "/reportingComponent",
            (EventApi::EventsV1, "reportingController") => "/reportingController",
            (EventApi::CoreV1, "message") => "/message",
            (EventApi::EventsV1, "message") => "/note",
            (_, "reportingInstance") => "/reportingInstance",
            (_, "action") => "/action",
            (_, "reason") => "/reason",
            (_, "eventTime") => "/eventTime",
            _ => "/nonexistent",
        }
    }
}

fn is_set(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer).is_some_and(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Object(o) => o
            .values()
            .any(|v| v.as_str().is_some_and(|s| !s.is_empty())),
        _ => true,
    })
}

/// `legacyValidateEvent`: the checks every Event write gets, through either API.
fn legacy_event(obj: &Value, api: EventApi) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = str_at(obj, "/metadata/namespace");
    let involved_ns = str_at(obj, api.pointer("involvedObject.namespace"));
    let field = |f: &str| str_at(obj, api.pointer(f));
    if !is_set(obj, api.pointer("eventTime")) {
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                involved_ns,
                "does not match event.namespace",
            ));
        }
        let controller_field = if api == EventApi::CoreV1 {
            "reportingComponent"
        } else {
            "reportingController"
        };
        let controller = field("reportingController");
        if controller.is_empty() {
            errs.push(FieldError::required(controller_field, ""));
        }
        for msg in names::qualified_name(controller) {
            errs.push(FieldError::invalid(controller_field, controller, msg));
        }
        for (f, limit) in [
            ("reportingInstance", EVENT_FIELD_LIMIT),
            ("action", EVENT_FIELD_LIMIT),
            ("reason", EVENT_FIELD_LIMIT),
            ("message", NOTE_LENGTH_LIMIT),
        ] {
            let v = field(f);
            if v.is_empty() && f != "message" {
                errs.push(FieldError::required(f, ""));
            }
            if v.len() > limit {
                errs.push(FieldError::invalid(
                    f,
                    "",
                    format!("can have at most {limit} characters"),
                ));
            }
        }
    }
    for msg in names::dns1123_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", ns, msg));
    }
    errs
}

/// `validateV1EventSeries`.
fn event_series(obj: &Value) -> Vec<FieldError> {
    let Some(series) = obj.get("series").filter(|s| !s.is_null()) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        errs.push(FieldError::invalid(
            "series.count",
            "",
            "should be at least 2",
        ));
    }
    if !is_set(series, "/lastObservedTime") {
        errs.push(FieldError::required("series.lastObservedTime", ""));
    }
    errs
}

/// `ValidateEventCreate` for `events.k8s.io/v1` (strict validation). The
/// ObjectMeta rules ran already.
fn event_create(obj: &Value) -> Vec<FieldError> {
    let mut errs = legacy_event(obj, EventApi::EventsV1);
    errs.extend(event_series(obj));
    if !is_set(obj, "/eventTime") {
        errs.push(FieldError::required("eventTime", ""));
    }
    let t = str_at(obj, "/type");
    if t != "Normal" && t != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            "",
            format!("has invalid value: {t}"),
        ));
    }
    for (json, internal) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("deprecatedSource", "source"),
    ] {
        if is_set(obj, &format!("/{json}")) {
            errs.push(FieldError::invalid(internal, "", "needs to be unset"));
        }
    }
    errs
}

/// `ValidateEventUpdate` for `events.k8s.io/v1`: legacy checks, series when
/// it changed, and everything but the series immutable.
fn event_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = legacy_event(new, EventApi::EventsV1);
    if new.get("series") != old.get("series") {
        errs.extend(event_series(new));
    }
    for (json, internal) in [
        ("regarding", "involvedObject"),
        ("reason", "reason"),
        ("note", "message"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("type", "type"),
        ("action", "action"),
        ("related", "related"),
        ("reportingController", "reportingController"),
        ("reportingInstance", "reportingInstance"),
    ] {
        let (n, o) = (new.get(json), old.get(json));
        let absent = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
        if n != o && !(absent(n) && absent(o)) {
            errs.push(immutable_value(internal, n));
        }
    }
    if !same_micros(new.get("eventTime"), old.get("eventTime")) {
        errs.push(immutable_value("eventTime", new.get("eventTime")));
    }
    errs
}

fn immutable_value(path: &str, v: Option<&Value>) -> FieldError {
    match v {
        Some(Value::String(s)) => FieldError::invalid(path, s, "field is immutable"),
        Some(other) => FieldError::invalid_plain(path, other, "field is immutable"),
        None => FieldError::invalid_plain(path, "null", "field is immutable"),
    }
}

/// Event times compare at microsecond precision (kubernetes#111928).
fn same_micros(a: Option<&Value>, b: Option<&Value>) -> bool {
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_micros())
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(group: &str, plural: &str, kind: &str) -> ResourceType {
        ResourceType::new(group, "v1", kind, plural, true, false)
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn dockerconfigjson_needs_valid_json() {
        let secrets = rt("", "secrets", "Secret");
        let base = |data: Value| json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/dockerconfigjson", "data": data});
        assert!(
            validate(
                &secrets,
                &base(json!({".dockerconfigjson": "eyJhdXRocyI6e319"}))
            )
            .is_empty()
        );
        assert_eq!(
            msgs(&validate(&secrets, &base(json!({"other": "eA=="})))),
            ["data[.dockerconfigjson]: Required value"]
        );
        // "x" is not JSON
        assert_eq!(
            msgs(&validate(
                &secrets,
                &base(json!({".dockerconfigjson": "eA=="}))
            )),
            [
                "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 'x' looking for beginning of value"
            ]
        );
        // "[]" is JSON but not an object
        assert_eq!(
            msgs(&validate(
                &secrets,
                &base(json!({".dockerconfigjson": "W10="}))
            )),
            [
                "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}"
            ]
        );
    }

    #[test]
    fn secret_keys_size_and_types() {
        let secrets = rt("", "secrets", "Secret");
        let obj = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque",
                         "data": {"bad key": "", "ok": ""}});
        assert!(
            msgs(&validate(&secrets, &obj))[0]
                .starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key")
        );
        let basic = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/basic-auth"});
        assert_eq!(
            msgs(&validate(&secrets, &basic)),
            [
                "data[username]: Required value",
                "data[password]: Required value"
            ]
        );
        let sa = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/service-account-token"});
        assert_eq!(
            msgs(&validate(&secrets, &sa)),
            ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        let old = json!({"metadata": {"name": "s"}, "type": "Opaque", "immutable": true, "data": {"a": "YQ=="}});
        let new = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"a": "Yg=="}});
        let m = msgs(&validate_update(&secrets, &new, &old));
        assert_eq!(
            m[0],
            "type: Invalid value: \"kubernetes.io/tls\": field is immutable"
        );
        assert_eq!(
            m[1],
            "immutable: Forbidden: field is immutable when `immutable` is set"
        );
        assert_eq!(
            m[2],
            "data: Forbidden: field is immutable when `immutable` is set"
        );
    }

    #[test]
    fn events_v1_rules() {
        let events = rt("events.k8s.io", "events", "Event");
        let good = json!({"metadata": {"name": "e.1", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000001Z",
            "reportingController": "ctl", "reportingInstance": "ctl-1", "action": "Act", "reason": "Why",
            "type": "Normal", "note": "n", "regarding": {"kind": "Secret", "name": "s", "namespace": "default"}});
        assert!(validate(&events, &good).is_empty());
        let mut bad = good.clone();
        bad["note"] = json!("x".repeat(1025));
        bad["reason"] = json!("r".repeat(129));
        bad["type"] = json!("Info");
        bad["action"] = json!("");
        assert_eq!(
            msgs(&validate(&events, &bad)),
            [
                "action: Required value",
                "reason: Invalid value: \"\": can have at most 128 characters",
                "message: Invalid value: \"\": can have at most 1024 characters",
                "type: Invalid value: \"\": has invalid value: Info",
            ]
        );
        // without eventTime only the legacy checks of old-style events run,
        // plus the strict `eventTime` requirement
        bad["eventTime"] = Value::Null;
        assert_eq!(
            msgs(&validate(&events, &bad)),
            [
                "eventTime: Required value",
                "type: Invalid value: \"\": has invalid value: Info"
            ]
        );

        let mut series = good.clone();
        series["series"] = json!({"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"});
        series["eventTime"] = json!("2024-01-01T00:00:00.000001000Z");
        assert!(validate_update(&events, &series, &good).is_empty());
        let mut changed = series.clone();
        changed["note"] = json!("other");
        changed["series"]["count"] = json!(1);
        assert_eq!(
            msgs(&validate_update(&events, &changed, &good)),
            [
                "series.count: Invalid value: \"\": should be at least 2",
                "message: Invalid value: \"other\": field is immutable"
            ]
        );
    }

    #[test]
    fn core_v1_events_get_the_legacy_checks_only() {
        let events = rt("", "events", "Event");
        // old-style event: the involved object's namespace must match
        let e = json!({"metadata": {"name": "e:1", "namespace": "a"},
                       "involvedObject": {"kind": "Pod", "name": "p", "namespace": "b"}});
        assert_eq!(
            msgs(&validate(&events, &e)),
            ["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]
        );
        // with eventTime the reporting fields are required, named as in core/v1
        let e = json!({"metadata": {"name": "e", "namespace": "a"}, "eventTime": "2025-01-01T00:00:00.000000Z",
                       "involvedObject": {"namespace": "a"}, "action": "A", "reason": "R", "reportingInstance": "i"});
        assert_eq!(
            msgs(&validate(&events, &e))[0],
            "reportingComponent: Required value"
        );
        // names only need to be path segments
        assert!(
            super::super::validate_create(
                &events,
                &json!({"metadata": {"name": "Any_Name:1", "namespace": "default"}})
            )
            .is_empty()
        );
        assert_eq!(
            msgs(&super::super::validate_create(
                &events,
                &json!({"metadata": {"name": "a/b", "namespace": "default"}})
            )),
            ["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
        );
    }

    #[test]
    fn leases_and_crds() {
        let leases = rt("coordination.k8s.io", "leases", "Lease");
        let l = json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0}});
        assert_eq!(
            msgs(&validate(&leases, &l)),
            ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
        let crds = ResourceType::new(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        );
        let c = json!({"metadata": {"name": "w.example.com"}, "spec": {"group": "example.com", "names": {"plural": "widgets"}}});
        assert_eq!(
            msgs(&validate(&crds, &c)),
            [
                "metadata.name: Invalid value: \"w.example.com\": must be spec.names.plural+\".\"+spec.group"
            ]
        );
    }
}
