//! Label and field selectors.
//!
//! Field selectors are checked per type like the real server's field label
//! conversion functions (`AddFieldLabelConversionFunc` in
//! `pkg/apis/core/v1/conversion.go` and `pkg/apis/events/v1/conversion.go`):
//! every type supports `metadata.name` and `metadata.namespace`, Secrets
//! add `type`, Namespaces support `status.phase` and `metadata.name` only,
//! Events their documented fields; anything else is a 400
//! `field label not supported: <label>`. See
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/>.

use serde_json::Value;

use crate::resource::ResourceType;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldReq {
    /// The field label as written in the selector.
    path: String,
    value: String,
    negate: bool,
    /// Dotted JSON paths the label reads, first non-empty value wins
    /// (empty: the label itself is the path).
    lookup: Vec<String>,
}

/// A parsed `labelSelector` + `fieldSelector` pair. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Split at commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn check_key(k: &str, whole: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) || k.contains(['=', '!', '(', ')']) {
        return Err(format!("unable to parse requirement: {whole:?}"));
    }
    Ok(k.to_string())
}

fn parse_label_req(r: &str) -> Result<LabelReq, String> {
    if let Some(rest) = r.strip_prefix('!') {
        return Ok(LabelReq::NotExists(check_key(rest, r)?));
    }
    if let Some(open) = r.find('(') {
        let close = r
            .rfind(')')
            .filter(|c| *c > open && r[c + 1..].trim().is_empty());
        let Some(close) = close else {
            return Err(format!("unable to parse requirement: {r:?}"));
        };
        let head: Vec<&str> = r[..open].split_whitespace().collect();
        let values: Vec<String> = r[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return match head.as_slice() {
            [k, op] if op.eq_ignore_ascii_case("in") => Ok(LabelReq::In(check_key(k, r)?, values)),
            [k, op] if op.eq_ignore_ascii_case("notin") => {
                Ok(LabelReq::NotIn(check_key(k, r)?, values))
            }
            _ => Err(format!("unable to parse requirement: {r:?}")),
        };
    }
    if let Some((k, v)) = r.split_once("!=") {
        return Ok(LabelReq::NotEq(check_key(k, r)?, v.trim().to_string()));
    }
    if let Some((k, v)) = r.split_once("==") {
        return Ok(LabelReq::Eq(check_key(k, r)?, v.trim().to_string()));
    }
    if let Some((k, v)) = r.split_once('=') {
        return Ok(LabelReq::Eq(check_key(k, r)?, v.trim().to_string()));
    }
    for (sep, gt) in [('>', true), ('<', false)] {
        if let Some((k, v)) = r.split_once(sep) {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("unable to parse requirement: {r:?}"))?;
            let k = check_key(k, r)?;
            return Ok(if gt {
                LabelReq::Gt(k, n)
            } else {
                LabelReq::Lt(k, n)
            });
        }
    }
    Ok(LabelReq::Exists(check_key(r, r)?))
}

fn parse_field_req(r: &str) -> Result<FieldReq, String> {
    let (path, value, negate) = if let Some((k, v)) = r.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = r.split_once("==") {
        (k, v, false)
    } else if let Some((k, v)) = r.split_once('=') {
        (k, v, false)
    } else {
        return Err(format!("invalid field selector: {r:?}"));
    };
    let path = path.trim();
    if path.is_empty() {
        return Err(format!("invalid field selector: {r:?}"));
    }
    Ok(FieldReq {
        path: path.to_string(),
        value: value.trim().to_string(),
        negate,
        lookup: Vec::new(),
    })
}

fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The JSON paths a field label reads for objects of `rt`, or `None` when
/// the real server does not support that label for the type.
fn field_lookup(rt: &ResourceType, label: &str) -> Option<Vec<String>> {
    let same = || Some(vec![label.to_string()]);
    match (rt.group.as_str(), rt.plural.as_str(), label) {
        ("", "namespaces", "metadata.name" | "status.phase") => same(),
        ("", "namespaces", _) => None,
        (_, _, "metadata.name" | "metadata.namespace") => same(),
        ("", "secrets", "type") => same(),
        (
            "",
            "events",
            "involvedObject.kind"
            | "involvedObject.namespace"
            | "involvedObject.name"
            | "involvedObject.uid"
            | "involvedObject.apiVersion"
            | "involvedObject.resourceVersion"
            | "involvedObject.fieldPath"
            | "reason"
            | "reportingComponent"
            | "type",
        ) => same(),
        ("", "events", "source") => {
            Some(vec!["source.component".into(), "reportingComponent".into()])
        }
        (
            "events.k8s.io",
            "events",
            "regarding.kind"
            | "regarding.namespace"
            | "regarding.name"
            | "regarding.uid"
            | "regarding.apiVersion"
            | "regarding.resourceVersion"
            | "regarding.fieldPath"
            | "reason"
            | "reportingController"
            | "type",
        ) => same(),
        ("events.k8s.io", "events", "source") => Some(vec![
            "deprecatedSource.component".into(),
            "reportingController".into(),
        ]),
        _ => None,
    }
}

impl Selector {
    /// Check the field labels against what the real server supports for
    /// `rt` and bind them to the object paths they read. The error is the
    /// real server's message (`field label not supported: <label>`), to be
    /// answered with 400.
    pub fn restrict_to(mut self, rt: &ResourceType) -> Result<Self, String> {
        for f in &mut self.fields {
            f.lookup = field_lookup(rt, &f.path)
                .ok_or_else(|| format!("field label not supported: {}", f.path))?;
        }
        Ok(self)
    }

    /// Parse selectors; `None` or empty strings select everything.
    pub fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, String> {
        let mut sel = Selector::default();
        if let Some(ls) = label_selector {
            for r in split_top_level(ls) {
                sel.labels.push(parse_label_req(r)?);
            }
        }
        if let Some(fs) = field_selector {
            for r in split_top_level(fs) {
                sel.fields.push(parse_field_req(r)?);
            }
        }
        Ok(sel)
    }

    /// Whether the object matches all requirements.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::Gt(k, n) => label(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            LabelReq::Lt(k, n) => label(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        });
        labels_ok
            && self.fields.iter().all(|f| {
                let value = if f.lookup.is_empty() {
                    field_value(obj, &f.path)
                } else {
                    f.lookup
                        .iter()
                        .map(|p| field_value(obj, p))
                        .find(|v| !v.is_empty())
                        .unwrap_or_default()
                };
                (value == f.value) != f.negate
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "n1", "namespace": "ns1", "labels": labels}, "type": "Opaque"})
    }

    #[test]
    fn label_selectors() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str| Selector::parse(Some(s), None).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("app in (web, db)"));
        assert!(!m("app in (db)"));
        assert!(m("app notin (db)"));
        assert!(m("missing notin (db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("app=web,tier in (front,back),!missing"));
        assert!(!m("app=web,tier=back"));
        assert!(m("n>4"));
        assert!(!m("n<4"));
        assert!(Selector::parse(Some("app in (web"), None).is_err());
        assert!(Selector::parse(Some("a b"), None).is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let m = |s: &str| Selector::parse(None, Some(s)).unwrap().matches(&o);
        assert!(m("metadata.name=n1"));
        assert!(m("metadata.name==n1,metadata.namespace=ns1"));
        assert!(!m("metadata.name=n2"));
        assert!(m("metadata.name!=n2"));
        assert!(m("type=Opaque"));
        assert!(Selector::parse(None, Some("nonsense")).is_err());
    }

    #[test]
    fn field_labels_are_checked_per_type() {
        let t = |g: &str, p: &str| ResourceType::new(g, "v1", "K", p, true, false);
        let check =
            |rt: &ResourceType, s: &str| Selector::parse(None, Some(s)).unwrap().restrict_to(rt);
        let secrets = t("", "secrets");
        assert!(
            check(
                &secrets,
                "type=Opaque,metadata.name=n1,metadata.namespace=ns1"
            )
            .is_ok()
        );
        assert_eq!(
            check(&secrets, "spec.x=1").unwrap_err(),
            "field label not supported: spec.x"
        );
        assert!(check(&t("", "configmaps"), "type=x").is_err());
        let ns = t("", "namespaces");
        assert!(check(&ns, "status.phase=Active").is_ok());
        assert!(check(&ns, "metadata.namespace=x").is_err());
        let cr = t("ecr.aws.edenlab.io", "ecrtokenrefreshes");
        assert!(check(&cr, "spec.region=x").is_err());
        assert!(check(&t("", "events"), "involvedObject.name=x").is_ok());
        let ev = t("events.k8s.io", "events");
        assert!(check(&ev, "involvedObject.name=x").is_err());
        let sel = check(&ev, "regarding.name=s,source=ctl").unwrap();
        assert!(sel.matches(&json!({"regarding": {"name": "s"}, "reportingController": "ctl"})));
        assert!(!sel.matches(&json!({"regarding": {"name": "s"}, "reportingController": "other"})));
        let sel = check(&secrets, "type=Opaque").unwrap();
        assert!(sel.matches(&obj(json!({}))));
    }
}
