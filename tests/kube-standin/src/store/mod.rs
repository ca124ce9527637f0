//! The object store: objects, resource versions, the watch event log,
//! finalizers and garbage collection. All operations are synchronous and run
//! under one mutex held by [`crate::StandIn`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

mod delete;
mod write;

pub(crate) use delete::{DeleteOpts, Deleted};
pub(crate) use write::Sub;

use crate::conversion;
use crate::error::{ApiError, ETCD_MAX_REQUEST_BYTES};
use crate::resource::{ResourceType, split_api_version};
use crate::selectors::Selector;
use crate::validation;

/// Default number of watch events kept for resuming watches.
pub const DEFAULT_EVENT_RETENTION: usize = 10_000;

/// Type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object deleted.
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the event log.
#[derive(Debug)]
pub(crate) struct LogEntry {
    pub rv: u64,
    pub gvr: String,
    pub namespace: Option<String>,
    pub kind: EventType,
    /// Object after the change (for DELETED: the last state, with the deletion's rv).
    pub object: Arc<Value>,
    /// Object before the change (MODIFIED only).
    pub old: Option<Arc<Value>>,
}

pub(crate) type ObjKey = (Option<String>, String);

/// All objects, the resourceVersion counter, the watch event log and the
/// server-side-apply bookkeeping.
pub(crate) struct Store {
    types: BTreeMap<String, ResourceType>,
    objects: HashMap<String, BTreeMap<ObjKey, Value>>,
    uids: HashMap<String, (String, ObjKey)>,
    rv: u64,
    log: VecDeque<Arc<LogEntry>>,
    compacted_rv: u64,
    retention: usize,
    /// Last applied configuration per object uid and (field manager, is-status).
    applied: HashMap<String, HashMap<(String, bool), Value>>,
    pub(crate) notify: watch::Sender<u64>,
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// The `metadata` map of an object, created when missing. Objects that are
/// not JSON objects are turned into one first (callers check beforehand).
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(o) = obj else {
        unreachable!("made an object above")
    };
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Everything but metadata and status (what `metadata.generation` tracks).
pub(crate) fn spec_equal(a: &Value, b: &Value) -> bool {
    const SKIP: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let keys = |m: &Map<String, Value>| m.keys().filter(|k| !SKIP.contains(&k.as_str())).count();
    keys(a) == keys(b)
        && a.iter()
            .filter(|(k, _)| !SKIP.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

impl Store {
    pub(crate) fn new(retention: usize) -> Self {
        let mut s = Store {
            types: BTreeMap::new(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            rv: 1,
            log: VecDeque::new(),
            compacted_rv: 0,
            retention: retention.max(1),
            applied: HashMap::new(),
            notify: watch::Sender::new(1),
        };
        for rt in ResourceType::builtins() {
            s.register(rt);
        }
        s
    }

    pub(crate) fn set_retention(&mut self, retention: usize) {
        self.retention = retention.max(1);
        self.compact();
    }

    pub(crate) fn register(&mut self, rt: ResourceType) {
        self.objects.entry(rt.gvr()).or_default();
        self.types.insert(rt.gvr(), rt);
    }

    pub(crate) fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    pub(crate) fn type_by_gvr(&self, gvr: &str) -> Option<ResourceType> {
        self.types.get(gvr.trim_matches('/')).cloned()
    }

    pub(crate) fn type_by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (g, v) = split_api_version(api_version);
        self.types
            .values()
            .find(|t| t.group == g && t.version == v && t.kind == kind)
            .cloned()
    }

    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    pub(crate) fn ns_key(rt: &ResourceType, ns: Option<&str>) -> Option<String> {
        if rt.namespaced {
            ns.map(str::to_string)
        } else {
            None
        }
    }

    pub(crate) fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects
            .get(&rt.gvr())?
            .get(&(Self::ns_key(rt, ns), name.to_string()))
    }

    /// Objects of a type, in (namespace, name) order; `ns = None` means all namespaces.
    pub(crate) fn list(&self, rt: &ResourceType, ns: Option<&str>, sel: &Selector) -> Vec<Value> {
        let Some(objs) = self.objects.get(&rt.gvr()) else {
            return Vec::new();
        };
        objs.iter()
            .filter(|((ons, _), _)| ns.is_none() || !rt.namespaced || ons.as_deref() == ns)
            .filter(|(_, o)| sel.matches(o))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// How many objects of a type (in `ns`, or all namespaces) satisfy `pred`.
    pub(crate) fn count(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        pred: impl Fn(&Value) -> bool,
    ) -> usize {
        self.objects.get(&rt.gvr()).map_or(0, |objs| {
            objs.iter()
                .filter(|((ons, _), _)| ns.is_none() || !rt.namespaced || ons.as_deref() == ns)
                .filter(|(_, o)| pred(o))
                .count()
        })
    }

    pub(crate) fn len(&self, rt: &ResourceType) -> usize {
        self.objects.get(&rt.gvr()).map_or(0, |objs| objs.len())
    }

    /// Log entries with rv greater than `cursor`, or `Err(oldest available rv)`
    /// when some of them were already compacted away.
    pub(crate) fn events_since(&self, cursor: u64) -> Result<Vec<Arc<LogEntry>>, u64> {
        if cursor < self.compacted_rv {
            return Err(self.compacted_rv + 1);
        }
        let start = self.log.partition_point(|e| e.rv <= cursor);
        Ok(self.log.range(start..).cloned().collect())
    }

    pub(crate) fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn compact(&mut self) {
        while self.log.len() > self.retention {
            if let Some(e) = self.log.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    pub(crate) fn push_log(
        &mut self,
        rt: &ResourceType,
        kind: EventType,
        object: &Value,
        old: Option<&Value>,
    ) {
        let entry = LogEntry {
            rv: self.rv,
            gvr: rt.gvr(),
            namespace: meta_str(object, "namespace").map(str::to_string),
            kind,
            object: Arc::new(object.clone()),
            old: old.map(|o| Arc::new(o.clone())),
        };
        self.log.push_back(Arc::new(entry));
        self.compact();
        self.notify.send_replace(self.rv);
    }

    pub(crate) fn set_rv(obj: &mut Value, rv: u64) {
        meta_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
    }

    // ---------------------------------------------------------------- create

    /// POST: decode, default, name generation, validation, then store.
    /// Errors in the order the real server reports them: 400 (undecodable,
    /// namespace mismatch), 422 (validation), 409 (exists), 500 (too large).
    pub(crate) fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type_meta(rt, &mut obj)?;
        conversion::normalize(rt, &mut obj).map_err(|e| ApiError::undecodable(rt, &e))?;
        let body_ns = meta_str(&obj, "namespace")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let namespace = if rt.namespaced {
            match (ns, body_ns) {
                (Some(p), Some(b)) if p != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(p), _) => Some(p.to_string()),
                (None, Some(b)) => Some(b),
                (None, None) => Some("default".to_string()),
            }
        } else {
            None
        };
        let mut name = meta_str(&obj, "name").unwrap_or("").to_string();
        if name.is_empty()
            && let Some(prefix) = meta_str(&obj, "generateName").filter(|s| !s.is_empty())
        {
            name = self.generate_name(rt, namespace.as_deref(), prefix);
        }
        {
            let m = meta_mut(&mut obj);
            if !name.is_empty() {
                m.insert("name".into(), json!(name));
            }
            match &namespace {
                Some(n) => m.insert("namespace".into(), json!(n)),
                None => m.remove("namespace"),
            };
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        if rt.has_status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        initial_status(rt, &mut obj);
        let errs = validation::validate_create(rt, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errs));
        }
        if self.get(rt, namespace.as_deref(), &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        check_stored_size(&obj)?;
        let rv = self.next_rv();
        Self::set_rv(&mut obj, rv);
        if rt.gvr() == CRD_GVR {
            for t in crd_types(&obj) {
                self.register(t);
            }
        }
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        let key = (namespace, name);
        self.uids.insert(uid, (rt.gvr(), key.clone()));
        self.objects
            .entry(rt.gvr())
            .or_default()
            .insert(key, obj.clone());
        self.push_log(rt, EventType::Added, &obj, None);
        Ok(obj)
    }

    /// `names.SimpleNameGenerator`: the prefix cut to 58 bytes plus five
    /// random characters, retried until the name is free.
    fn generate_name(&self, rt: &ResourceType, ns: Option<&str>, prefix: &str) -> String {
        const MAX_PREFIX: usize = 63 - 5;
        let mut cut = prefix.len().min(MAX_PREFIX);
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        loop {
            let name = format!("{}{}", &prefix[..cut], random_suffix());
            if self.get(rt, ns, &name).is_none() {
                return name;
            }
        }
    }
}

pub(crate) const CRD_GVR: &str = "apiextensions.k8s.io/v1/customresourcedefinitions";

/// 500 `etcdserver: request is too large` for objects over etcd's request
/// limit (measured as the object's JSON; the real server stores built-in
/// types as protobuf, which is somewhat smaller).
pub(crate) fn check_stored_size(obj: &Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(obj).map(|v| v.len()).unwrap_or(0);
    if size > ETCD_MAX_REQUEST_BYTES {
        return Err(ApiError::etcd_too_large());
    }
    Ok(())
}

/// `apiVersion`/`kind` of a written object must match the URL; both are
/// filled in when absent.
pub(crate) fn check_type_meta(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(o) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let av = rt.api_version();
    if let Some(given) = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && given != av
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({given}) does not match the expected API version ({av})"
        )));
    }
    if let Some(given) = o
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && given != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({given}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    o.insert("apiVersion".into(), json!(av));
    o.insert("kind".into(), json!(rt.kind));
    Ok(())
}

/// What the strategies of a few types set on create: a Namespace is
/// `Active`; a CRD's names are accepted and it is `Established` at once.
fn initial_status(rt: &ResourceType, obj: &mut Value) {
    if rt.gvr() == "v1/namespaces" {
        obj["status"] = json!({"phase": "Active"});
    }
    if rt.gvr() == CRD_GVR {
        let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let stored: Vec<Value> = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let now = now_rfc3339();
        obj["status"] = json!({
            "acceptedNames": names,
            "storedVersions": stored,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
    }
}

/// The resource types a CustomResourceDefinition declares (served versions).
pub(crate) fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = crd.get("spec");
    let s = |p: &str| {
        spec.and_then(|s| s.pointer(p))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (group, kind, plural) = (s("/group"), s("/names/kind"), s("/names/plural"));
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let namespaced = s("/scope") != "Cluster";
    spec.and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("served") != Some(&Value::Bool(false)))
                .filter_map(|v| {
                    let version = v.get("name")?.as_str()?;
                    let status = v.pointer("/subresources/status").is_some();
                    Some(ResourceType::new(
                        &group, version, &kind, &plural, namespaced, status,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
