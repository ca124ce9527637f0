//! The object store: objects, resource versions, the watch event log,
//! finalizers and garbage collection. All operations are synchronous and run
//! under one mutex held by [`crate::StandIn`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::patch::{self, PatchKind};
use crate::resource::{ResourceType, split_api_version};
use crate::selectors::Selector;

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

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

/// Parsed `DeleteOptions`.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOpts {
    pub orphan: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

impl DeleteOpts {
    pub(crate) fn from_body(body: &Value, query_policy: Option<&str>) -> Self {
        let policy = query_policy.or_else(|| body.get("propagationPolicy").and_then(Value::as_str));
        let orphan =
            policy == Some("Orphan") || body.get("orphanDependents") == Some(&Value::Bool(true));
        let pre = body.get("preconditions");
        DeleteOpts {
            orphan,
            precondition_uid: pre
                .and_then(|p| p.get("uid"))
                .and_then(Value::as_str)
                .map(str::to_string),
            precondition_rv: pre
                .and_then(|p| p.get("resourceVersion"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

type ObjKey = (Option<String>, String);

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

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let o = obj.as_object_mut().expect("objects are JSON objects");
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
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

fn owner_uids(obj: &Value) -> Vec<String> {
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
fn spec_equal(a: &Value, b: &Value) -> bool {
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

    fn ns_key(rt: &ResourceType, ns: Option<&str>) -> Option<String> {
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

    /// Log entries with rv greater than `cursor`, or `Err(oldest available rv)`
    /// when some of them were already compacted away.
    pub(crate) fn events_since(&self, cursor: u64) -> Result<Vec<Arc<LogEntry>>, u64> {
        if cursor < self.compacted_rv {
            return Err(self.compacted_rv + 1);
        }
        let start = self.log.partition_point(|e| e.rv <= cursor);
        Ok(self.log.range(start..).cloned().collect())
    }

    fn next_rv(&mut self) -> u64 {
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

    fn push_log(
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

    fn set_rv(obj: &mut Value, rv: u64) {
        meta_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
    }

    // ---------------------------------------------------------------- create

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
        self.check_type_meta(rt, &mut obj)?;
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
        if name.is_empty() {
            let Some(prefix) = meta_str(&obj, "generateName")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
            else {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            loop {
                name = format!("{prefix}{}", random_suffix());
                if self.get(rt, namespace.as_deref(), &name).is_none() {
                    break;
                }
            }
        }
        if self.get(rt, namespace.as_deref(), &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let rv = self.next_rv();
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            match &namespace {
                Some(n) => m.insert("namespace".into(), json!(n)),
                None => m.remove("namespace"),
            };
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("managedFields");
        }
        if rt.has_status_subresource {
            obj.as_object_mut().expect("object").remove("status");
        }
        self.on_create_hooks(rt, &mut obj);
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

    fn check_type_meta(&self, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        let o = obj.as_object_mut().expect("object");
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

    /// Server-side behaviour of a few special types.
    fn on_create_hooks(&mut self, rt: &ResourceType, obj: &mut Value) {
        if rt.gvr() == "v1/namespaces" {
            obj["status"] = json!({"phase": "Active"});
        }
        if rt.gvr() == "apiextensions.k8s.io/v1/customresourcedefinitions" {
            for t in crd_types(obj) {
                self.register(t);
            }
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

    // ---------------------------------------------------------------- update

    /// Apply the server-owned-field and subresource rules to a proposed new
    /// version of `old`.
    fn prepare_update(
        &self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        self.check_type_meta(rt, &mut new)?;
        if let Some(n) = meta_str(&new, "name").filter(|n| !n.is_empty())
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && let Some(n) = meta_str(&new, "namespace").filter(|n| !n.is_empty())
            && Some(n) != meta_str(old, "namespace")
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::stale(rt, &name));
        }
        let mut result = match sub {
            Sub::Status => {
                let mut r = old.clone();
                let o = r.as_object_mut().expect("object");
                match new.get("status") {
                    Some(s) if !s.is_null() => o.insert("status".into(), s.clone()),
                    _ => o.remove("status"),
                };
                r
            }
            Sub::Main => {
                if rt.has_status_subresource {
                    let o = new.as_object_mut().expect("object");
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                new
            }
        };
        // Server-owned metadata.
        let old_meta = meta(old).cloned().unwrap_or_default();
        let m = meta_mut(&mut result);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old_meta.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        m.remove("managedFields");
        if old_meta.contains_key("deletionTimestamp") {
            let old_f = finalizers(old);
            if finalizers(&result).iter().any(|f| !old_f.contains(f)) {
                return Err(ApiError::invalid(
                    rt,
                    &name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        Ok(result)
    }

    /// Store a prepared update. No-op writes change nothing (no new rv, no event).
    fn commit_update(&mut self, rt: &ResourceType, old: &Value, mut new: Value) -> Value {
        if &new == old {
            return new;
        }
        if !spec_equal(old, &new) {
            let g = meta(old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let rv = self.next_rv();
        Self::set_rv(&mut new, rv);
        if rt.gvr() == "apiextensions.k8s.io/v1/customresourcedefinitions" {
            for t in crd_types(&new) {
                self.register(t);
            }
        }
        let key = (
            meta_str(&new, "namespace").map(str::to_string),
            meta_str(&new, "name").unwrap_or_default().to_string(),
        );
        self.objects
            .entry(rt.gvr())
            .or_default()
            .insert(key.clone(), new.clone());
        self.push_log(rt, EventType::Modified, &new, Some(old));
        if meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"))
            && finalizers(&new).is_empty()
        {
            self.real_delete(rt, &key, true);
        }
        new
    }

    pub(crate) fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let new = self.prepare_update(rt, &old, body, sub)?;
        Ok(self.commit_update(rt, &old, new))
    }

    // ----------------------------------------------------------------- patch

    /// Returns the object and whether it was created (server-side apply only).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        field_manager: Option<&str>,
        sub: Sub,
    ) -> Result<(Value, bool), ApiError> {
        if kind == PatchKind::Apply {
            let manager = field_manager.filter(|m| !m.is_empty()).ok_or_else(|| {
                ApiError::bad_request(
                    "PATCH requests with apply content type require a fieldManager",
                )
            })?;
            return self.apply(rt, ns, name, body, manager, sub);
        }
        if kind == PatchKind::Strategic && !rt.supports_strategic_merge() {
            return Err(ApiError::new(
                415,
                format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                     (strategic merge patch is not supported for {})",
                    rt.qualified_plural()
                ),
            ));
        }
        let old = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut patched = old.clone();
        match kind {
            PatchKind::Merge => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                patch::merge_patch(&mut patched, body);
            }
            PatchKind::Strategic => {
                if !body.is_object() {
                    return Err(ApiError::bad_request(
                        "a strategic merge patch must be a JSON object",
                    ));
                }
                patch::strategic_merge_patch(&mut patched, body);
            }
            PatchKind::Json => {
                patch::json_patch(&mut patched, body).map_err(|(code, msg)| match code {
                    422 => ApiError::invalid(rt, name, &msg),
                    c => ApiError::new(c, msg),
                })?;
            }
            PatchKind::Apply => unreachable!("handled above"),
        }
        if !patched.is_object() {
            return Err(ApiError::invalid(
                rt,
                name,
                "the patch produced a non-object",
            ));
        }
        let new = self.prepare_update(rt, &old, patched, sub)?;
        Ok((self.commit_update(rt, &old, new), false))
    }

    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: &Value,
        manager: &str,
        sub: Sub,
    ) -> Result<(Value, bool), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("an apply patch must be an object"));
        }
        let mut body = body.clone();
        if let Some(n) = meta_str(&body, "name").filter(|n| !n.is_empty())
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        meta_mut(&mut body).insert("name".into(), json!(name));
        let applied = match sub {
            Sub::Status => json!({"status": body.get("status").cloned().unwrap_or(json!({}))}),
            Sub::Main => {
                let mut a = body.clone();
                if rt.has_status_subresource {
                    a.as_object_mut().expect("object").remove("status");
                }
                for f in [
                    "resourceVersion",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "managedFields",
                ] {
                    meta_mut(&mut a).remove(f);
                }
                a
            }
        };
        let Some(old) = self.get(rt, ns, name).cloned() else {
            if sub == Sub::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let created = self.create(rt, ns, body)?;
            let uid = meta_str(&created, "uid").unwrap_or_default().to_string();
            self.applied
                .entry(uid)
                .or_default()
                .insert((manager.to_string(), false), applied);
            return Ok((created, true));
        };
        let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        let key = (manager.to_string(), sub == Sub::Status);
        let managers = self.applied.get(&uid);
        let previous = managers.and_then(|m| m.get(&key)).cloned();
        let others: Vec<Value> = managers
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| **k != key)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        let other_refs: Vec<&Value> = others.iter().collect();
        let mut merged = old.clone();
        if let Some(prev) = &previous {
            patch::apply_prune(&mut merged, prev, &applied, &other_refs);
        }
        patch::apply_merge(&mut merged, &applied);
        if let Some(rv) = meta_str(&body, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(rt, name));
        }
        let new = self.prepare_update(rt, &old, merged, sub)?;
        let result = self.commit_update(rt, &old, new);
        if self.uids.contains_key(&uid) {
            self.applied.entry(uid).or_default().insert(key, applied);
        }
        Ok((result, false))
    }

    // ---------------------------------------------------------------- delete

    pub(crate) fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = &opts.precondition_uid
            && Some(uid.as_str()) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if !finalizers(&old).is_empty() {
            if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                return Ok(old);
            }
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok(self.commit_update(rt, &old, new));
        }
        let key = (Self::ns_key(rt, ns), name.to_string());
        Ok(self.real_delete(rt, &key, !opts.orphan).unwrap_or(old))
    }

    pub(crate) fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selector,
        opts: &DeleteOpts,
    ) -> Vec<Value> {
        let victims = self.list(rt, ns, sel);
        victims
            .iter()
            .filter_map(|o| {
                let name = meta_str(o, "name")?;
                self.delete(rt, meta_str(o, "namespace"), name, opts).ok()
            })
            .collect()
    }

    /// Remove the object for good: DELETED event, namespace contents, GC.
    fn real_delete(&mut self, rt: &ResourceType, key: &ObjKey, gc: bool) -> Option<Value> {
        let mut obj = self.objects.get_mut(&rt.gvr())?.remove(key)?;
        let rv = self.next_rv();
        Self::set_rv(&mut obj, rv);
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        self.uids.remove(&uid);
        self.applied.remove(&uid);
        self.push_log(rt, EventType::Deleted, &obj, None);
        if rt.gvr() == "v1/namespaces" {
            self.delete_namespace_contents(&key.1);
        }
        if gc {
            self.collect_dependents(&uid);
        }
        Some(obj)
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        let namespaced: Vec<ResourceType> = self
            .types
            .values()
            .filter(|t| t.namespaced)
            .cloned()
            .collect();
        for t in namespaced {
            let names: Vec<String> = self
                .objects
                .get(&t.gvr())
                .map(|objs| {
                    objs.keys()
                        .filter(|(n, _)| n.as_deref() == Some(ns))
                        .map(|(_, name)| name.clone())
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                let _ = self.delete(&t, Some(ns), &name, &DeleteOpts::default());
            }
        }
    }

    /// Garbage-collect the dependents of a deleted owner (background propagation).
    fn collect_dependents(&mut self, owner_uid: &str) {
        let mut deps = Vec::new();
        for (gvr, objs) in &self.objects {
            for (k, o) in objs {
                if owner_uids(o).iter().any(|u| u == owner_uid) {
                    deps.push((gvr.clone(), k.clone()));
                }
            }
        }
        for (gvr, key) in deps {
            let Some(rt) = self.types.get(&gvr).cloned() else {
                continue;
            };
            let Some(obj) = self.objects.get(&gvr).and_then(|o| o.get(&key)).cloned() else {
                continue;
            };
            let alive: Vec<String> = owner_uids(&obj)
                .into_iter()
                .filter(|u| u != owner_uid && self.uids.contains_key(u))
                .collect();
            if alive.is_empty() {
                let _ = self.delete(&rt, key.0.as_deref(), &key.1, &DeleteOpts::default());
            } else {
                // Other owners remain: drop the dangling references only.
                let mut new = obj.clone();
                if let Some(Value::Array(refs)) = meta_mut(&mut new).get_mut("ownerReferences") {
                    refs.retain(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| alive.iter().any(|a| a == u))
                    });
                }
                self.commit_update(&rt, &obj, new);
            }
        }
    }
}

/// The resource types a CustomResourceDefinition declares (served versions).
fn crd_types(crd: &Value) -> Vec<ResourceType> {
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
