//! What the real API server's decoding, defaulting and conversion do to a
//! written object before validation: `[]byte` fields are base64 decoded
//! (Go's `encoding/base64.StdEncoding`, errors included) and re-encoded
//! canonically, Secret `stringData` is merged into `data` and dropped
//! (`Convert_v1_Secret_To_core_Secret`), Secret `type` defaults to `Opaque`
//! (`SetDefaults_Secret`), and empty `omitempty` collections disappear.
//! See <https://kubernetes.io/docs/concepts/configuration/secret/>.

use serde_json::{Map, Value};

use crate::resource::ResourceType;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn decode_char(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|a| *a == c).map(|p| p as u8)
}

/// Decode like Go's `base64.StdEncoding.DecodeString`: padding required,
/// `\r` and `\n` ignored, non-zero trailing bits accepted. `Err(offset)` is
/// Go's `CorruptInputError` (`illegal base64 data at input byte <offset>`).
pub(crate) fn base64_decode(s: &str) -> Result<Vec<u8>, usize> {
    let src = s.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0usize;
    loop {
        // One quantum (decodeQuantum in encoding/base64).
        let mut dbuf = [0u8; 4];
        let mut dlen = 4usize;
        let mut j = 0usize;
        let mut done = false;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required by StdEncoding.
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = decode_char(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(si - 1);
            }
            // Padding.
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != b'=' {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                return Err(si);
            }
            dlen = j;
            done = true;
            break;
        }
        let val = (u32::from(dbuf[0]) << 18)
            | (u32::from(dbuf[1]) << 12)
            | (u32::from(dbuf[2]) << 6)
            | u32::from(dbuf[3]);
        let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if done {
            return Ok(out);
        }
    }
}

/// Standard base64 with padding (what Go's JSON encoder writes for `[]byte`).
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decoded length of a canonical base64 string (0 if it does not decode).
pub(crate) fn base64_decoded_len(s: &str) -> usize {
    base64_decode(s).map(|b| b.len()).unwrap_or(0)
}

/// The `type` of a (normalized) Secret.
pub(crate) fn secret_type(obj: &Value) -> &str {
    obj.get("type").and_then(Value::as_str).unwrap_or("Opaque")
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Decode a `map[string][]byte` field in place: every value becomes
/// canonical base64; `null` values become empty.
fn decode_byte_map(obj: &mut Value, kind: &str, field: &str) -> Result<(), String> {
    let Some(v) = obj.get_mut(field) else {
        return Ok(());
    };
    let map = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field {kind}.{field} of type map[string][]uint8",
                json_kind(other)
            ));
        }
    };
    for value in map.values_mut() {
        match value {
            Value::Null => *value = Value::String(String::new()),
            Value::String(s) => {
                let bytes = base64_decode(s)
                    .map_err(|at| format!("illegal base64 data at input byte {at}"))?;
                *value = Value::String(base64_encode(&bytes));
            }
            other => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go struct field {kind}.{field} of type []uint8",
                    json_kind(other)
                ));
            }
        }
    }
    Ok(())
}

/// Check a `map[string]string` field.
fn check_string_map(obj: &Value, kind: &str, field: &str) -> Result<(), String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) => match m.values().find(|v| !v.is_string() && !v.is_null()) {
            Some(bad) => Err(format!(
                "json: cannot unmarshal {} into Go struct field {kind}.{field} of type string",
                json_kind(bad)
            )),
            None => Ok(()),
        },
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field {kind}.{field} of type map[string]string",
            json_kind(other)
        )),
    }
}

/// Drop `field` if it is null or an empty map/list (Go `omitempty`).
fn drop_empty(map: &mut Map<String, Value>, field: &str) {
    let empty = match map.get(field) {
        Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if empty {
        map.remove(field);
    }
}

/// Normalize a written object of type `rt` the way the real server's
/// decode/default/convert path does. `Err` carries the decoder's message
/// (the caller wraps it as a 400, or as a 422 for patches).
pub(crate) fn normalize(rt: &ResourceType, obj: &mut Value) -> Result<(), String> {
    if let Some(meta) = obj.get("metadata") {
        check_string_map(meta, "ObjectMeta", "labels")
            .and_then(|()| check_string_map(meta, "ObjectMeta", "annotations"))
            .map_err(|e| e.replace("ObjectMeta.", "ObjectMeta.metadata."))?;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "managedFields",
        ] {
            drop_empty(meta, f);
        }
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => normalize_secret(obj),
        ("", "configmaps") => {
            check_string_map(obj, "ConfigMap", "data")?;
            decode_byte_map(obj, "ConfigMap", "binaryData")?;
            if let Some(m) = obj.as_object_mut() {
                drop_empty(m, "data");
                drop_empty(m, "binaryData");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn normalize_secret(obj: &mut Value) -> Result<(), String> {
    decode_byte_map(obj, "Secret", "data")?;
    check_string_map(obj, "Secret", "stringData")?;
    let Some(o) = obj.as_object_mut() else {
        return Ok(());
    };
    if let Some(Value::Object(string_data)) = o.remove("stringData") {
        let data = o.entry("data").or_insert_with(|| Value::Object(Map::new()));
        if !data.is_object() {
            *data = Value::Object(Map::new());
        }
        if let Some(d) = data.as_object_mut() {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default();
                d.insert(k, Value::String(base64_encode(text.as_bytes())));
            }
        }
    }
    drop_empty(o, "data");
    let typ = o.get("type").and_then(Value::as_str).unwrap_or("");
    if typ.is_empty() {
        o.insert("type".into(), Value::String("Opaque".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_like_go() {
        assert_eq!(base64_decode("dG9rZW4=").unwrap(), b"token");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("eQ==").unwrap(), b"y");
        assert_eq!(base64_decode("eW\nE=").unwrap(), b"ya");
        // non-canonical trailing bits are accepted by StdEncoding
        assert_eq!(base64_decode("eR==").unwrap(), b"y");
        // CorruptInputError offsets as Go reports them
        assert_eq!(base64_decode("abc!"), Err(3));
        assert_eq!(base64_decode("abc"), Err(0));
        assert_eq!(base64_decode("abcde"), Err(4));
        assert_eq!(base64_decode("a==="), Err(1));
        assert_eq!(base64_decode("ab="), Err(3));
        assert_eq!(base64_decode("ab=x"), Err(2));
        assert_eq!(base64_decode("eQ==eQ=="), Err(4));
        assert_eq!(base64_decode("not base64"), Err(3));
        for s in ["", "a", "ab", "abc", "abcd", "\u{0}\u{ff}x"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"AWS:tok"), "QVdTOnRvaw==");
    }

    #[test]
    fn secrets_are_decoded_merged_and_defaulted() {
        let rt = ResourceType::new("", "v1", "Secret", "secrets", true, false);
        let mut s = json!({"metadata": {"name": "s", "labels": {}}, "data": {"a": "eR==", "b": null},
                           "stringData": {"b": "x", "c": "y"}});
        normalize(&rt, &mut s).unwrap();
        assert_eq!(
            s,
            json!({"metadata": {"name": "s"}, "data": {"a": "eQ==", "b": "eA==", "c": "eQ=="}, "type": "Opaque"})
        );
        let mut bad = json!({"data": {"a": "abc!"}});
        assert_eq!(
            normalize(&rt, &mut bad).unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        let mut bad = json!({"data": {"a": 1}});
        assert_eq!(
            normalize(&rt, &mut bad).unwrap_err(),
            "json: cannot unmarshal number into Go struct field Secret.data of type []uint8"
        );
        let mut empty = json!({"data": {}, "type": ""});
        normalize(&rt, &mut empty).unwrap();
        assert_eq!(empty, json!({"type": "Opaque"}));
        let mut bad = json!({"metadata": {"labels": {"n": 1}}});
        assert_eq!(
            normalize(&rt, &mut bad).unwrap_err(),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
        );
    }
}
