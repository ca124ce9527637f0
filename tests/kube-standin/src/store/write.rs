//! Updates: PUT, the patch types and server-side apply. All of them end in
//! [`Store::finish_update`], which mirrors `rest.BeforeUpdate` (server-owned
//! metadata, validation) and the storage layer (no-op writes, etcd's size
//! limit), so that every way of writing an object gets the same checks.

use serde_json::{Value, json};

use super::{
    CRD_GVR, EventType, ObjKey, Store, check_stored_size, check_type_meta, crd_types, finalizers,
    meta, meta_mut, meta_str, spec_equal,
};
use crate::conversion;
use crate::error::ApiError;
use crate::patch::{self, PatchKind};
use crate::resource::ResourceType;
use crate::validation::{self, FieldError};

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

/// 422 for a patched object the server cannot decode (`patch: Invalid
/// value: "<patched object>": <decoder error>`, with the empty kind and
/// name the real patch handler uses).
fn undecodable_patch(patched: &Value, why: &str) -> ApiError {
    let text = serde_json::to_string(patched).unwrap_or_default();
    ApiError::invalid_kind("", "", "", "", &[FieldError::invalid("patch", &text, why)])
}

/// Go's `metav1.Time.String()` for a timestamp in messages.
fn go_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S +0000 UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

impl Store {
    /// PUT (`UpdateResource` + `Store.Update`).
    pub(crate) fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type_meta(rt, &mut body)?;
        conversion::normalize(rt, &mut body).map_err(|e| ApiError::undecodable(rt, &e))?;
        // checkName of the update handler.
        let body_name = meta_str(&body, "name").unwrap_or("");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && let (Some(url_ns), Some(body_ns)) =
                (ns, meta_str(&body, "namespace").filter(|n| !n.is_empty()))
            && url_ns != body_ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({body_ns}) does not match the namespace on the URL ({url_ns})"
            )));
        }
        let old = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        // A uid in the body is a precondition (`defaultUpdatedObjectInfo.Preconditions`).
        let old_uid = meta_str(&old, "uid").unwrap_or_default();
        if let Some(uid) = meta_str(&body, "uid").filter(|u| !u.is_empty())
            && uid != old_uid
        {
            return Err(ApiError::storage_precondition(
                rt,
                ns,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        self.check_resource_version(rt, &old, &mut body)?;
        self.finish_update(rt, &old, body, sub)
    }

    /// The optimistic-concurrency rule of `Store.Update`: no resourceVersion
    /// means unconditional (built-in types) or 422 (custom resources); a
    /// different one is a 409.
    fn check_resource_version(
        &self,
        rt: &ResourceType,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), ApiError> {
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        let old_rv = meta_str(old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        match meta_str(new, "resourceVersion").filter(|s| !s.is_empty()) {
            None if rt.is_builtin() => {
                meta_mut(new).insert("resourceVersion".into(), json!(old_rv));
                Ok(())
            }
            None => Err(ApiError::invalid_kind(
                &rt.qualified_plural(),
                &rt.group,
                &rt.plural,
                &name,
                &[FieldError::invalid_plain(
                    "metadata.resourceVersion",
                    "0x0",
                    "must be specified for an update",
                )],
            )),
            Some(rv) if rv != old_rv => Err(ApiError::stale(rt, &name)),
            Some(_) => Ok(()),
        }
    }

    /// PATCH of every type but apply. Returns the object and whether it was
    /// created (apply only).
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
        // A patch never creates: a missing object is a 404.
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
                patch::strategic_merge_patch(&mut patched, body, &rt.kind);
            }
            PatchKind::Json => {
                const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
                if let Some(ops) = body.as_array()
                    && ops.len() > MAX_JSON_PATCH_OPERATIONS
                {
                    return Err(ApiError::new(
                        413,
                        format!(
                            "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                            ops.len()
                        ),
                    ));
                }
                patch::json_patch(&mut patched, body).map_err(|(code, msg)| match code {
                    // NewGenericServerResponse(422, ...): the operation's error
                    // is not passed on.
                    422 => {
                        let mut e = ApiError::new(
                            422,
                            "the server rejected our request due to an error in our request",
                        );
                        e.details = Some(Box::default());
                        e
                    }
                    c => ApiError::new(c, msg),
                })?;
            }
            PatchKind::Apply => unreachable!("handled above"),
        }
        if !patched.is_object() {
            return Err(undecodable_patch(
                &patched,
                "the patch produced a non-object",
            ));
        }
        conversion::normalize(rt, &mut patched).map_err(|e| undecodable_patch(&patched, &e))?;
        check_type_meta(rt, &mut patched)?;
        check_patched_identity(rt, &old, &patched, name)?;
        self.check_resource_version(rt, &old, &mut patched)?;
        Ok((self.finish_update(rt, &old, patched, sub)?, false))
    }

    /// Server-side apply (simplified): fields this manager applied before
    /// and no longer applies are removed unless another manager applies
    /// them, then the applied object is merged in.
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
        check_type_meta(rt, &mut body)?;
        if let Some(n) = meta_str(&body, "name").filter(|n| !n.is_empty())
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        meta_mut(&mut body).insert("name".into(), json!(name));
        let body_uid = meta_str(&body, "uid")
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        let applied = match sub {
            Sub::Status => json!({"status": body.get("status").cloned().unwrap_or(json!({}))}),
            Sub::Main => {
                let mut a = body.clone();
                if rt.has_status_subresource
                    && let Some(o) = a.as_object_mut()
                {
                    o.remove("status");
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
            if let Some(uid) = body_uid {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "uid mismatch: the provided object specified uid {uid}, and no existing object was found"
                    ),
                ));
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
        if let Some(u) = body_uid {
            // An applied uid is part of the object: a different one fails
            // validation (uid is immutable).
            meta_mut(&mut merged).insert("uid".into(), json!(u));
        }
        if let Some(rv) = meta_str(&body, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(rt, name));
        }
        conversion::normalize(rt, &mut merged).map_err(|e| undecodable_patch(&merged, &e))?;
        let result = self.finish_update(rt, &old, merged, sub)?;
        if self.uids.contains_key(&uid) {
            self.applied.entry(uid).or_default().insert(key, applied);
        }
        Ok((result, false))
    }

    /// `rest.BeforeUpdate` and the storage write: subresource rules,
    /// server-owned metadata, validation, no-op detection, size limit.
    pub(crate) fn finish_update(
        &mut self,
        rt: &ResourceType,
        old: &Value,
        new: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        let mut result = match sub {
            Sub::Status => {
                // Status writes change only `.status` (ResetObjectMetaForStatus).
                let mut r = old.clone();
                if let Some(o) = r.as_object_mut() {
                    match new.get("status") {
                        Some(s) if !s.is_null() => o.insert("status".into(), s.clone()),
                        _ => o.remove("status"),
                    };
                }
                r
            }
            Sub::Main => {
                let mut n = new;
                if rt.has_status_subresource
                    && let Some(o) = n.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                n
            }
        };
        let old_meta = meta(old).cloned().unwrap_or_default();
        let mut errs = Vec::new();
        {
            let m = meta_mut(&mut result);
            // Requests cannot set these; an update keeps the stored values.
            for f in ["generation", "creationTimestamp", "resourceVersion"] {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            if m.get("uid")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && let Some(u) = old_meta.get("uid")
            {
                m.insert("uid".into(), u.clone());
            }
            // An update can never remove or change a deletion timestamp or
            // grace period; setting one on a live object is invalid.
            for f in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
                match (old_meta.get(f), m.get(f).cloned()) {
                    (Some(o), _) => {
                        m.insert(f.into(), o.clone());
                    }
                    (None, Some(n)) if !n.is_null() => {
                        let shown = match n.as_str() {
                            Some(t) => go_time(t),
                            None => n.to_string(),
                        };
                        errs.push(FieldError::invalid_plain(
                            format!("metadata.{f}"),
                            shown,
                            "field is immutable",
                        ));
                    }
                    (None, _) => {
                        m.remove(f);
                    }
                }
            }
            m.remove("managedFields");
            if !rt.namespaced {
                // EnsureObjectNamespaceMatchesRequestNamespace clears it.
                m.remove("namespace");
            }
        }
        errs.extend(validation::validate_update(rt, &result, old));
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errs));
        }
        if &result == old {
            return Ok(result);
        }
        if !spec_equal(old, &result) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut result).insert("generation".into(), json!(g + 1));
        }
        check_stored_size(&result)?;
        Ok(self.commit_update(rt, old, result))
    }

    /// Store a prepared update. No-op writes change nothing (no new rv, no
    /// event). Removing the last finalizer of a deleted object removes it.
    pub(crate) fn commit_update(
        &mut self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
    ) -> Value {
        if &new == old {
            return new;
        }
        let rv = self.next_rv();
        Self::set_rv(&mut new, rv);
        if rt.gvr() == CRD_GVR {
            for t in crd_types(&new) {
                self.register(t);
            }
        }
        let key: ObjKey = (
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
}

/// After applying a patch: the object keeps its namespace
/// (`EnsureObjectNamespaceMatchesRequestNamespace`) and name (`checkName`).
fn check_patched_identity(
    rt: &ResourceType,
    old: &Value,
    patched: &Value,
    name: &str,
) -> Result<(), ApiError> {
    if rt.namespaced
        && let Some(n) = meta_str(patched, "namespace").filter(|n| !n.is_empty())
        && Some(n) != meta_str(old, "namespace")
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let patched_name = meta_str(patched, "name").unwrap_or("");
    if patched_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({patched_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}
