//! Events on the custom resources (`events.k8s.io/v1`), published the way kube-runtime's
//! `Recorder` does — one Event per (type, reason, action) and a `series` count for its
//! repeats within [`SERIES_WINDOW`] — but with names and notes a real API server accepts
//! whatever the resource's name: the name is cut so that it stays a valid DNS subdomain
//! (the Recorder appends 17 characters to a name that may already be 253 long), and the note
//! is cut to the API's 1 KiB.
//!
//! See [Event v1](https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::status::truncate;

/// Longest `note` the API accepts, in bytes.
pub const MAX_NOTE: usize = 1024;
/// Longest `reason` and `action` the API accepts, in bytes.
pub const MAX_REASON: usize = 128;
/// Repeats within this window are counted on the first Event (its `series`) instead of
/// creating new ones (kube-runtime uses 6 minutes too).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// Longest Event name kept from the regarded object's name (the rest is `.` and 16 hex digits).
const NAME_PREFIX_MAX: usize = 253 - 17;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    namespace: String,
    warning: bool,
    reason: String,
    action: String,
}

#[derive(Debug, Clone)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events about custom resources.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<HashMap<Key, Published>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The Event name for an object named `name` at `now`: `<name, cut>.<nanoseconds, hex>`.
pub fn event_name(name: &str, now: Timestamp) -> String {
    let mut prefix = &name[..name.len().min(NAME_PREFIX_MAX)];
    prefix = prefix.trim_end_matches(['.', '-']);
    format!("{prefix}.{:x}", now.as_nanosecond())
}

impl Publisher {
    /// A publisher reporting as `controller` (and `instance`, e.g. the pod name).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event about `regarding` (which must carry a namespace and uid).
    ///
    /// # Errors
    /// The API's refusal; callers log it (an Event is never worth failing a reconcile).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
        action: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            warning,
            reason: reason.to_string(),
            action: action.to_string(),
        };
        let repeat = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain(|_, p| now.duration_since(p.last) < SERIES_WINDOW);
            recent.get(&key).cloned()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let published = match repeat {
            Some(p) => {
                let count = p.count.saturating_add(1);
                let patch = serde_json::json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                }});
                api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Published {
                    name: p.name,
                    count,
                    last: now,
                }
            }
            None => {
                let name = event_name(regarding.name.as_deref().unwrap_or("object"), now);
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    action: Some(truncate(action, MAX_REASON)),
                    reason: Some(truncate(reason, MAX_REASON)),
                    note: Some(truncate(note, MAX_NOTE)),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &event).await?;
                Published {
                    name,
                    count: 1,
                    last: now,
                }
            }
        };
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, published);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_valid_for_the_longest_resource_names() {
        let now = Timestamp::now();
        let long = "a".repeat(253);
        let n = event_name(&long, now);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(crate::policy::guard::check_secret_name(&n).is_ok(), "{n}");
        let dotted = format!("{}.{}", "b".repeat(235), "c".repeat(17));
        let n = event_name(&dotted, now);
        assert!(crate::policy::guard::check_secret_name(&n).is_ok(), "{n}");
        assert!(event_name("ecr-credentials", now).starts_with("ecr-credentials."));
    }
}
