//! Fault injection and request counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A request verb, as counted and matched by fault rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET on a collection.
    List,
    /// GET on a collection with `watch=true`.
    Watch,
    /// GET on one object (or its status).
    Get,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (any patch type, including server-side apply).
    Patch,
    /// DELETE (one object or a collection).
    Delete,
}

impl Verb {
    /// Lower-case name used by [`RequestCounts`].
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
        )
    }
}

/// One fault rule: matching requests get an error `Status` with `status` as code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// Only requests with this verb (any if `None`).
    pub verb: Option<Verb>,
    /// Only this resource (`v1/secrets`, or `v1/secrets/status` for the
    /// status subresource only); any if `None`.
    pub gvr: Option<String>,
    /// Only requests for this object name (for create: the body's name).
    pub name: Option<String>,
    /// HTTP code to answer with (e.g. 500, 409, 429).
    pub status: u16,
    /// How many times to fire; `None` = forever.
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule failing every request with `status`, forever. Narrow it with the builder methods.
    pub fn new(status: u16) -> Self {
        Self {
            verb: None,
            gvr: None,
            name: None,
            status,
            times: None,
        }
    }
    /// Restrict to a verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }
    /// Restrict to a resource.
    pub fn gvr(mut self, gvr: &str) -> Self {
        self.gvr = Some(gvr.to_string());
        self
    }
    /// Restrict to an object name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// Fire only `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// Fault rules and artificial latency, shared by all servers of a `StandIn`.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Duration>,
}

impl Faults {
    /// Add a rule. Rules are checked in insertion order; the first match fires.
    pub fn add(&self, rule: FaultRule) {
        lock(&self.rules).push(rule);
    }

    /// Remove all rules (latency is kept).
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// Delay applied before handling every HTTP request.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// The current latency.
    pub fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    /// Number of rules still active.
    pub fn active_rules(&self) -> usize {
        lock(&self.rules).len()
    }

    /// Returns the status code to fail with, consuming one use of the matching rule.
    pub(crate) fn check(
        &self,
        verb: Verb,
        gvr: &str,
        subresource: Option<&str>,
        name: Option<&str>,
    ) -> Option<u16> {
        let mut rules = lock(&self.rules);
        let idx = rules.iter().position(|r| {
            r.verb.is_none_or(|v| v == verb)
                && r.gvr.as_deref().is_none_or(|g| {
                    g == gvr
                        || subresource
                            .is_some_and(|s| g.strip_prefix(gvr) == Some(&format!("/{s}")))
                })
                && r.name.as_deref().is_none_or(|n| Some(n) == name)
                && r.times != Some(0)
        })?;
        let status = rules[idx].status;
        if let Some(t) = rules[idx].times.as_mut() {
            *t -= 1;
            if *t == 0 {
                rules.remove(idx);
            }
        }
        Some(status)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A snapshot of request counts per (verb, resource).
///
/// Requests to a subresource count both under the resource (`v1/secrets`)
/// and separately under the subresource (`v1/secrets/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub(crate) main: BTreeMap<(String, String), u64>,
    pub(crate) sub: BTreeMap<(String, String), u64>,
}

impl RequestCounts {
    pub(crate) fn record(&mut self, verb: Verb, gvr: &str, subresource: Option<&str>) {
        *self
            .main
            .entry((verb.as_str().to_string(), gvr.to_string()))
            .or_default() += 1;
        if let Some(s) = subresource {
            *self
                .sub
                .entry((verb.as_str().to_string(), format!("{gvr}/{s}")))
                .or_default() += 1;
        }
    }

    /// Count for a verb (`list`, `watch`, `get`, `create`, `update`, `patch`,
    /// `delete`) and resource (`v1/secrets`, or `v1/secrets/status`).
    pub fn get_count(&self, verb: &str, gvr: &str) -> u64 {
        let key = (verb.to_string(), gvr.to_string());
        self.main
            .get(&key)
            .or_else(|| self.sub.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// Total of a verb over all resources.
    pub fn verb_total(&self, verb: &str) -> u64 {
        self.main
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// create + update + patch + delete over all resources.
    pub fn writes(&self) -> u64 {
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| self.verb_total(v))
            .sum()
    }

    /// create + update + patch + delete for one resource.
    pub fn writes_for(&self, gvr: &str) -> u64 {
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| self.get_count(v, gvr))
            .sum()
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.main.values().sum()
    }

    /// All (verb, resource, count) entries, subresources included.
    pub fn entries(&self) -> Vec<(String, String, u64)> {
        self.main
            .iter()
            .chain(self.sub.iter())
            .map(|((v, g), n)| (v.clone(), g.clone(), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_and_expire() {
        let f = Faults::default();
        f.add(
            FaultRule::new(500)
                .verb(Verb::Patch)
                .gvr("v1/secrets")
                .times(2),
        );
        f.add(FaultRule::new(409).gvr("g/v/things/status"));
        assert_eq!(f.check(Verb::Get, "v1/secrets", None, Some("a")), None);
        assert_eq!(
            f.check(Verb::Patch, "v1/secrets", None, Some("a")),
            Some(500)
        );
        assert_eq!(
            f.check(Verb::Patch, "v1/secrets", Some("status"), None),
            Some(500)
        );
        assert_eq!(f.check(Verb::Patch, "v1/secrets", None, Some("a")), None);
        assert_eq!(f.check(Verb::Patch, "g/v/things", None, None), None);
        assert_eq!(
            f.check(Verb::Patch, "g/v/things", Some("status"), None),
            Some(409)
        );
        assert_eq!(f.active_rules(), 1);
        f.clear();
        assert_eq!(f.active_rules(), 0);
    }

    #[test]
    fn counts() {
        let mut c = RequestCounts::default();
        c.record(Verb::Patch, "v1/secrets", None);
        c.record(Verb::Patch, "v1/secrets", Some("status"));
        c.record(Verb::List, "v1/secrets", None);
        assert_eq!(c.get_count("patch", "v1/secrets"), 2);
        assert_eq!(c.get_count("patch", "v1/secrets/status"), 1);
        assert_eq!(c.writes(), 2);
        assert_eq!(c.total(), 3);
    }
}
