//! Patch algorithms: JSON merge patch, a simplified strategic merge patch,
//! JSON patch and the merge rules used for server-side apply.

use serde_json::{Map, Value};

/// The patch flavours selected by `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// Parse a `Content-Type` header value.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Failure applying a patch: (HTTP code, message).
pub type PatchFailure = (u16, String);

/// Apply an RFC 6902 JSON patch. Malformed patches give 400, failing
/// operations (including `test`) give 422.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchFailure> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| (400, format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &p.0)
        .map_err(|e| (422, format!("the JSON patch could not be applied: {e}")))
}

/// Apply an RFC 7386 merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// How a strategic merge patch treats a list field (the `patchStrategy` /
/// `patchMergeKey` struct tags of the Go type; no tag means atomic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Replaced as a whole (`+listType=atomic` or no patch strategy).
    Atomic,
    /// Items merged by the value of this key (`patchStrategy:"merge"`).
    MergeKey(&'static str),
    /// Primitive items merged as a set (`patchStrategy:"merge"` on `[]string`).
    Set,
}

/// Where a kind keeps its `PodSpec`, if it has one.
fn pod_spec_prefix(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

/// The patch strategy of the list at `path` (field names from the object
/// root; list items add no segment) in objects of `kind`, after the struct
/// tags of `k8s.io/api` and `metav1.ObjectMeta`. Lists not named here are
/// atomic, which is what the real server does for untagged lists such as
/// `ServiceAccount.imagePullSecrets` (`+listType=atomic`).
pub(crate) fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    use ListStrategy::{Atomic, MergeKey, Set};
    match path {
        ["metadata", "ownerReferences"] => return MergeKey("uid"),
        ["metadata", "finalizers"] => return Set,
        _ => {}
    }
    match (kind, path) {
        ("ServiceAccount", ["secrets"]) => return MergeKey("name"),
        (
            "Namespace"
            | "Pod"
            | "Node"
            | "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicationController"
            | "PersistentVolumeClaim",
            ["status", "conditions"],
        ) => return MergeKey("type"),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => return MergeKey("ip"),
        _ => {}
    }
    let Some(rest) = pod_spec_prefix(kind).and_then(|p| path.strip_prefix(p)) else {
        return Atomic;
    };
    match rest {
        ["containers" | "initContainers" | "ephemeralContainers"]
        | ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
            MergeKey("name")
        }
        ["hostAliases"] => MergeKey("ip"),
        ["topologySpreadConstraints"] => MergeKey("topologyKey"),
        [
            "containers" | "initContainers" | "ephemeralContainers",
            field,
        ] => match *field {
            "env" => MergeKey("name"),
            "ports" => MergeKey("containerPort"),
            "volumeMounts" => MergeKey("mountPath"),
            "volumeDevices" => MergeKey("devicePath"),
            _ => Atomic,
        },
        _ => Atomic,
    }
}

/// A strategic merge patch for objects of `kind`: like a merge patch, except
/// that lists follow [`list_strategy`] (keyed merge, set merge, or atomic
/// replacement) and the `$patch: replace|delete` and
/// `$deleteFromPrimitiveList/` directives are understood. Other `$`
/// directives (`$setElementOrder`, `$retainKeys`) are ignored. Inside an
/// atomic list, directives are not interpreted: the list is replaced and
/// the `$` keys of its items dropped (the real server drops them as unknown
/// fields when it decodes the result).
/// <https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/>
pub fn strategic_merge_patch(doc: &mut Value, patch: &Value, kind: &str) {
    let mut path = Vec::new();
    smp(doc, patch, kind, &mut path);
}

fn smp(doc: &mut Value, patch: &Value, kind: &str, path: &mut Vec<String>) {
    let Value::Object(pmap) = patch else {
        *doc = patch.clone();
        return;
    };
    match pmap.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = pmap.clone();
            p.remove("$patch");
            *doc = Value::Object(strip_directives(p));
            return;
        }
        Some("delete") => {
            *doc = Value::Null;
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(dmap) = doc.as_object_mut() else {
        return;
    };
    for (k, pv) in pmap {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(del)) = (dmap.get_mut(field), pv) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match pv {
            Value::Null => {
                dmap.remove(k);
            }
            Value::Object(_) => {
                let entry = dmap.entry(k.clone()).or_insert(Value::Null);
                smp(entry, pv, kind, path);
                if entry.is_null() {
                    dmap.remove(k);
                }
            }
            Value::Array(plist) => {
                let segs: Vec<&str> = path.iter().map(String::as_str).collect();
                let strategy = list_strategy(kind, &segs);
                let replace_all = plist
                    .iter()
                    .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
                match (dmap.get_mut(k), strategy) {
                    (Some(Value::Array(dlist)), ListStrategy::MergeKey(mk))
                        if !replace_all && plist.iter().all(Value::is_object) =>
                    {
                        merge_keyed_list(dlist, plist, mk, kind, path);
                    }
                    (Some(Value::Array(dlist)), ListStrategy::Set) => {
                        for item in plist {
                            if !dlist.contains(item) {
                                dlist.push(item.clone());
                            }
                        }
                    }
                    (_, ListStrategy::MergeKey(_)) => {
                        let items = plist
                            .iter()
                            .filter(|i| {
                                !matches!(
                                    i.get("$patch").and_then(Value::as_str),
                                    Some("replace" | "delete")
                                )
                            })
                            .map(strip_value)
                            .collect();
                        dmap.insert(k.clone(), Value::Array(items));
                    }
                    _ => {
                        dmap.insert(
                            k.clone(),
                            Value::Array(plist.iter().map(strip_value).collect()),
                        );
                    }
                }
            }
            other => {
                dmap.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
}

fn merge_keyed_list(
    dlist: &mut Vec<Value>,
    plist: &[Value],
    mk: &str,
    kind: &str,
    path: &mut Vec<String>,
) {
    for pitem in plist {
        let key = pitem.get(mk);
        let pos = key.and_then(|key| dlist.iter().position(|d| d.get(mk) == Some(key)));
        let delete = pitem.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                dlist.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => smp(&mut dlist[i], pitem, kind, path),
            (None, false) => dlist.push(strip_value(pitem)),
        }
    }
}

fn strip_directives(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k, strip_value(&v)))
        .collect()
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m.clone())),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

/// Deep-merge `applied` into `base` (server-side apply): maps are merged
/// recursively, everything else (lists included) is replaced; `null` removes.
pub fn apply_merge(base: &mut Value, applied: &Value) {
    match (base, applied) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, av) in a {
                if av.is_null() {
                    b.remove(k);
                    continue;
                }
                match b.get_mut(k) {
                    Some(bv) if bv.is_object() && av.is_object() => apply_merge(bv, av),
                    _ => {
                        b.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (b, a) => *b = a.clone(),
    }
}

/// Remove from `base` the fields that `previous` (this manager's last applied
/// configuration) set but `current` (its new one) no longer sets, unless
/// another manager's applied configuration (`others`) still sets them.
pub fn apply_prune(base: &mut Value, previous: &Value, current: &Value, others: &[&Value]) {
    let (Value::Object(b), Value::Object(p)) = (base, previous) else {
        return;
    };
    for (k, pv) in p {
        let cv = current.get(k);
        let other_vs: Vec<&Value> = others.iter().filter_map(|o| o.get(k)).collect();
        match cv {
            None => {
                if other_vs.is_empty() {
                    b.remove(k);
                } else if pv.is_object() {
                    // Others own parts of this map: prune only what they do not own.
                    if let Some(bv) = b.get_mut(k) {
                        apply_prune(bv, pv, &Value::Object(Map::new()), &other_vs);
                    }
                }
            }
            Some(cv) if pv.is_object() && cv.is_object() => {
                if let Some(bv) = b.get_mut(k) {
                    apply_prune(bv, pv, cv, &other_vs);
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut d, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_lists() {
        let mut d = json!({"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]},
                           "secrets": [{"name": "s1"}], "other": [1]});
        strategic_merge_patch(
            &mut d,
            &json!({"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "2", "name": "y"}, {"uid": "1", "name": "x2"}]},
                    "secrets": [{"name": "s2"}, {"name": "s1", "$patch": "delete"}], "other": [2]}),
            "ServiceAccount",
        );
        assert_eq!(
            d,
            json!({"metadata": {"finalizers": ["a", "b"], "ownerReferences": [{"uid": "1", "name": "x2"}, {"uid": "2", "name": "y"}]},
                   "secrets": [{"name": "s2"}], "other": [2]})
        );
        strategic_merge_patch(
            &mut d,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            "ServiceAccount",
        );
        assert_eq!(d["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn service_account_image_pull_secrets_are_atomic() {
        let mut sa = json!({"imagePullSecrets": [{"name": "a"}, {"name": "b"}]});
        strategic_merge_patch(
            &mut sa,
            &json!({"imagePullSecrets": [{"name": "c"}]}),
            "ServiceAccount",
        );
        assert_eq!(sa, json!({"imagePullSecrets": [{"name": "c"}]}));
        // `$patch: delete` is no directive inside an atomic list: the list
        // is replaced and the unknown key dropped
        strategic_merge_patch(
            &mut sa,
            &json!({"imagePullSecrets": [{"name": "c", "$patch": "delete"}]}),
            "ServiceAccount",
        );
        assert_eq!(sa, json!({"imagePullSecrets": [{"name": "c"}]}));
        // the PodSpec field of the same name is keyed by name
        let mut pod = json!({"spec": {"imagePullSecrets": [{"name": "a"}], "tolerations": [{"key": "x"}],
                             "containers": [{"name": "c", "image": "i1", "env": [{"name": "A", "value": "1"}]}]}});
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"imagePullSecrets": [{"name": "b"}], "tolerations": [{"key": "y"}],
                    "containers": [{"name": "c", "env": [{"name": "B", "value": "2"}]}]}}),
            "Pod",
        );
        assert_eq!(
            pod,
            json!({"spec": {"imagePullSecrets": [{"name": "a"}, {"name": "b"}], "tolerations": [{"key": "y"}],
                   "containers": [{"name": "c", "image": "i1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}})
        );
        let mut dep =
            json!({"spec": {"template": {"spec": {"imagePullSecrets": [{"name": "a"}]}}}});
        strategic_merge_patch(
            &mut dep,
            &json!({"spec": {"template": {"spec": {"imagePullSecrets": [{"$patch": "replace"}, {"name": "z"}]}}}}),
            "Deployment",
        );
        assert_eq!(
            dep["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": "z"}])
        );
        // conditions are keyed by type only where the Go type says so
        let mut crd = json!({"status": {"conditions": [{"type": "A"}]}});
        strategic_merge_patch(
            &mut crd,
            &json!({"status": {"conditions": [{"type": "B"}]}}),
            "CustomResourceDefinition",
        );
        assert_eq!(crd["status"]["conditions"], json!([{"type": "B"}]));
        let mut ns = json!({"status": {"conditions": [{"type": "A"}]}});
        strategic_merge_patch(
            &mut ns,
            &json!({"status": {"conditions": [{"type": "B"}]}}),
            "Namespace",
        );
        assert_eq!(
            ns["status"]["conditions"],
            json!([{"type": "A"}, {"type": "B"}])
        );
    }

    #[test]
    fn json_patch_test_op_fails_with_422() {
        let mut d = json!({"a": 1});
        let err =
            json_patch(&mut d, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(err.0, 422);
        assert_eq!(
            json_patch(&mut d, &json!({"op": "nope"})).unwrap_err().0,
            400
        );
        json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/a", "value": 2}]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": 2}));
    }

    #[test]
    fn apply_prune_and_merge() {
        let mut base = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}}, "spec": {"x": 1, "y": [1, 2]}});
        let prev = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let cur = json!({"metadata": {"labels": {"a": "9"}}, "spec": {"y": [3]}});
        let other = json!({"metadata": {"labels": {"b": "2"}}});
        apply_prune(&mut base, &prev, &cur, &[&other]);
        apply_merge(&mut base, &cur);
        assert_eq!(
            base,
            json!({"metadata": {"labels": {"a": "9", "b": "2", "c": "3"}}, "spec": {"y": [3]}})
        );
    }
}
