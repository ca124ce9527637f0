//! DELETE: `DeleteOptions`, preconditions, deletion with finalizers
//! (`markAsDeleting`), namespace contents and owner-reference garbage
//! collection. See
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/>.

use serde_json::{Value, json};

use super::{ObjKey, Store, finalizers, meta, meta_mut, meta_str, now_rfc3339, owner_uids};
use crate::error::ApiError;
use crate::resource::ResourceType;
use crate::store::EventType;
use crate::validation::FieldError;

/// Parsed `DeleteOptions` (body and query parameters).
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOpts {
    /// `propagationPolicy` as given (validated on use).
    pub propagation_policy: Option<String>,
    /// The deprecated `orphanDependents`, if given.
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// What a DELETE did.
#[derive(Debug)]
pub(crate) enum Deleted {
    /// The object is gone; the value is its last state.
    Removed(Value),
    /// The object has finalizers and is (now) marked for deletion.
    Pending(Value),
}

impl DeleteOpts {
    /// From a DELETE body and the `propagationPolicy` query parameter.
    pub(crate) fn from_body(body: &Value, query_policy: Option<&str>) -> Self {
        let policy = query_policy.map(str::to_string).or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let pre = body.get("preconditions");
        let pre_str = |k: &str| {
            pre.and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        DeleteOpts {
            propagation_policy: policy,
            orphan_dependents: body.get("orphanDependents").and_then(Value::as_bool),
            precondition_uid: pre_str("uid"),
            precondition_rv: pre_str("resourceVersion"),
        }
    }

    fn orphan(&self) -> bool {
        self.propagation_policy.as_deref() == Some("Orphan") || self.orphan_dependents == Some(true)
    }

    /// `ValidateDeleteOptions`.
    fn validate(&self) -> Result<(), ApiError> {
        let mut errs = Vec::new();
        if let Some(p) = &self.propagation_policy {
            if self.orphan_dependents.is_some() {
                errs.push(FieldError::invalid(
                    "propagationPolicy",
                    p,
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            if !matches!(p.as_str(), "Foreground" | "Background" | "Orphan") {
                errs.push(FieldError::not_supported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_kind(
                "DeleteOptions.meta.k8s.io",
                "meta.k8s.io",
                "DeleteOptions",
                "",
                &errs,
            ))
        }
    }
}

impl Store {
    /// DELETE of one object (`Store.Delete` with `rest.BeforeDelete`).
    pub(crate) fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let old = self
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        opts.validate()?;
        let uid = meta_str(&old, "uid").unwrap_or_default();
        if let Some(want) = &opts.precondition_uid
            && want != uid
        {
            return Err(ApiError::conflict_on_kind(
                rt,
                name,
                &format!(
                    "the UID in the precondition ({want}) does not match the UID in record ({uid}). \
                     The object might have been deleted and then recreated"
                ),
            ));
        }
        let rv = meta_str(&old, "resourceVersion").unwrap_or_default();
        if let Some(want) = &opts.precondition_rv
            && want != rv
        {
            return Err(ApiError::conflict_on_kind(
                rt,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion \
                     in record ({rv}). The object might have been modified"
                ),
            ));
        }
        if !finalizers(&old).is_empty() {
            if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                // Already terminating: nothing changes.
                return Ok(Deleted::Pending(old));
            }
            // markAsDeleting: timestamp, grace period 0, generation + 1.
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
            if generation > 0 {
                m.insert("generation".into(), json!(generation + 1));
            }
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok(Deleted::Pending(self.commit_update(rt, &old, new)));
        }
        let key = (Self::ns_key(rt, ns), name.to_string());
        Ok(Deleted::Removed(
            self.real_delete(rt, &key, !opts.orphan()).unwrap_or(old),
        ))
    }

    /// DELETE of a collection: each selected object as a single DELETE
    /// would; returns their states afterwards.
    pub(crate) fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &crate::selectors::Selector,
        opts: &DeleteOpts,
    ) -> Result<Vec<Value>, ApiError> {
        opts.validate()?;
        let victims = self.list(rt, ns, sel);
        Ok(victims
            .iter()
            .filter_map(|o| {
                let name = meta_str(o, "name")?;
                match self.delete(rt, meta_str(o, "namespace"), name, opts).ok()? {
                    Deleted::Removed(v) | Deleted::Pending(v) => Some(v),
                }
            })
            .collect())
    }

    /// Remove the object for good: DELETED event, namespace contents, GC.
    pub(crate) fn real_delete(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        gc: bool,
    ) -> Option<Value> {
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
