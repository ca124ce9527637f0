//! Label and field selectors.

use serde_json::Value;

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
    path: String,
    value: String,
    negate: bool,
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

impl Selector {
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
            && self
                .fields
                .iter()
                .all(|f| (field_value(obj, &f.path) == f.value) != f.negate)
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
}
