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
///
/// The five fields are the original rule; the builder methods that add a
/// namespace, an exact resource, a delay, a `Retry-After` or another
/// action ([`FaultRule::namespace`], [`FaultRule::gvr_exact`],
/// [`FaultRule::delay`], [`FaultRule::retry_after`],
/// [`FaultRule::plain_text`], [`FaultRule::garble`], [`FaultRule::pass`])
/// turn it into a [`Fault`], which [`Faults::add`] takes as well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// Only requests with this verb (any if `None`).
    pub verb: Option<Verb>,
    /// Only this resource (`v1/secrets` matches the resource and its
    /// subresources, `v1/secrets/status` the status subresource only);
    /// any if `None`.
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
    /// Restrict to a resource (and its subresources).
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
    /// A fault that lets matching requests execute normally but cuts the
    /// last byte off the response body, so that the client cannot decode
    /// it (the write happened; the code is the normal 200/201).
    pub fn garble() -> Fault {
        Fault {
            action: FaultAction::Garble,
            ..Fault::from(Self::new(200))
        }
    }
    /// A fault that changes nothing but what its builder methods add
    /// (typically [`Fault::delay`]).
    pub fn pass() -> Fault {
        Fault {
            action: FaultAction::Pass,
            ..Fault::from(Self::new(200))
        }
    }
    /// Restrict to requests in this namespace (the URL's namespace).
    pub fn namespace(self, namespace: &str) -> Fault {
        Fault::from(self).namespace(namespace)
    }
    /// Restrict to exactly this resource, its subresources excluded.
    pub fn gvr_exact(self, gvr: &str) -> Fault {
        Fault::from(self).gvr_exact(gvr)
    }
    /// Answer only after `delay` (the request itself runs first).
    pub fn delay(self, delay: Duration) -> Fault {
        Fault::from(self).delay(delay)
    }
    /// Add a `Retry-After: <secs>` header and `details.retryAfterSeconds`.
    pub fn retry_after(self, secs: u32) -> Fault {
        Fault::from(self).retry_after(secs)
    }
    /// Answer with a `text/plain` body instead of a Status.
    pub fn plain_text(self) -> Fault {
        Fault::from(self).plain_text()
    }
}

/// What a matching [`Fault`] does to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this HTTP code and a Status; the request is not executed.
    Fail(u16),
    /// Execute the request, then cut the response body short.
    Garble,
    /// Execute the request normally (only the delay applies).
    Pass,
}

/// A fault rule with every option: what it matches, what it does, when it
/// answers. Built from a [`FaultRule`] or with [`Fault::fail`],
/// [`FaultRule::garble`] or [`FaultRule::pass`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Only requests with this verb (any if `None`).
    pub verb: Option<Verb>,
    /// Only this resource; see [`FaultRule::gvr`] and `gvr_exact`.
    pub gvr: Option<String>,
    /// Whether `gvr` excludes subresources.
    pub gvr_exact: bool,
    /// Only requests whose URL namespace is this one.
    pub namespace: Option<String>,
    /// Only requests for this object name (for create: the body's name).
    pub name: Option<String>,
    /// What to do.
    pub action: FaultAction,
    /// `Retry-After` seconds for failure answers (header and
    /// `details.retryAfterSeconds`, like `errors.NewTooManyRequests`).
    pub retry_after: Option<u32>,
    /// Failure answers are `text/plain` (what API Priority and Fairness and
    /// the max-in-flight filter send with 429: `Too many requests, please
    /// try again later.`) rather than a Status.
    pub plain_text: bool,
    /// The answer is sent only after this delay.
    pub delay: Duration,
    /// How many times to fire; `None` = forever.
    pub times: Option<u32>,
}

impl From<FaultRule> for Fault {
    fn from(r: FaultRule) -> Self {
        Fault {
            verb: r.verb,
            gvr: r.gvr,
            gvr_exact: false,
            namespace: None,
            name: r.name,
            action: FaultAction::Fail(r.status),
            retry_after: None,
            plain_text: false,
            delay: Duration::ZERO,
            times: r.times,
        }
    }
}

impl Fault {
    /// A fault failing every request with `status`.
    pub fn fail(status: u16) -> Self {
        Fault::from(FaultRule::new(status))
    }
    /// Restrict to a verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }
    /// Restrict to a resource and its subresources.
    pub fn gvr(mut self, gvr: &str) -> Self {
        self.gvr = Some(gvr.to_string());
        self.gvr_exact = false;
        self
    }
    /// Restrict to exactly this resource (`v1/secrets` without `/status`).
    pub fn gvr_exact(mut self, gvr: &str) -> Self {
        self.gvr = Some(gvr.to_string());
        self.gvr_exact = true;
        self
    }
    /// Restrict to requests in this namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
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
    /// Answer only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// `Retry-After` for failure answers.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// Plain-text failure bodies.
    pub fn plain_text(mut self) -> Self {
        self.plain_text = true;
        self
    }

    fn matches(&self, req: &FaultRequest<'_>) -> bool {
        self.verb.is_none_or(|v| v == req.verb)
            && self.gvr.as_deref().is_none_or(|g| {
                (g == req.gvr && (!self.gvr_exact || req.subresource.is_none()))
                    || req
                        .subresource
                        .is_some_and(|s| g.strip_prefix(req.gvr) == Some(&format!("/{s}")))
            })
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| Some(n) == req.namespace)
            && self.name.as_deref().is_none_or(|n| Some(n) == req.name)
            && self.times != Some(0)
    }
}

/// The request a fault is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultRequest<'a> {
    pub verb: Verb,
    pub gvr: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// What a fired fault asks the server to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FaultHit {
    pub action: FaultAction,
    pub retry_after: Option<u32>,
    pub plain_text: bool,
    pub delay: Duration,
}

/// Fault rules and artificial latency, shared by all servers of a `StandIn`.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Fault>>,
    latency: Mutex<Duration>,
}

impl Faults {
    /// Add a rule ([`FaultRule`] or [`Fault`]). Rules are checked in
    /// insertion order; the first match fires.
    pub fn add(&self, rule: impl Into<Fault>) {
        lock(&self.rules).push(rule.into());
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

    /// The first matching rule's effect, consuming one of its uses.
    pub(crate) fn check(&self, req: &FaultRequest<'_>) -> Option<FaultHit> {
        let mut rules = lock(&self.rules);
        let idx = rules.iter().position(|r| r.matches(req))?;
        let r = &rules[idx];
        let hit = FaultHit {
            action: r.action,
            retry_after: r.retry_after,
            plain_text: r.plain_text,
            delay: r.delay,
        };
        if let Some(t) = rules[idx].times.as_mut() {
            *t -= 1;
            if *t == 0 {
                rules.remove(idx);
            }
        }
        Some(hit)
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

    fn req<'a>(
        verb: Verb,
        gvr: &'a str,
        subresource: Option<&'a str>,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    ) -> FaultRequest<'a> {
        FaultRequest {
            verb,
            gvr,
            subresource,
            namespace,
            name,
        }
    }

    fn fired(f: &Faults, r: FaultRequest<'_>) -> Option<FaultAction> {
        f.check(&r).map(|h| h.action)
    }

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
        assert_eq!(
            fired(&f, req(Verb::Get, "v1/secrets", None, None, Some("a"))),
            None
        );
        assert_eq!(
            fired(&f, req(Verb::Patch, "v1/secrets", None, None, Some("a"))),
            Some(FaultAction::Fail(500))
        );
        assert_eq!(
            fired(
                &f,
                req(Verb::Patch, "v1/secrets", Some("status"), None, None)
            ),
            Some(FaultAction::Fail(500))
        );
        assert_eq!(
            fired(&f, req(Verb::Patch, "v1/secrets", None, None, Some("a"))),
            None
        );
        assert_eq!(
            fired(&f, req(Verb::Patch, "g/v/things", None, None, None)),
            None
        );
        assert_eq!(
            fired(
                &f,
                req(Verb::Patch, "g/v/things", Some("status"), None, None)
            ),
            Some(FaultAction::Fail(409))
        );
        assert_eq!(f.active_rules(), 1);
        f.clear();
        assert_eq!(f.active_rules(), 0);
    }

    #[test]
    fn namespace_exact_resource_and_options() {
        let f = Faults::default();
        f.add(FaultRule::new(503).gvr_exact("v1/secrets").namespace("a"));
        assert_eq!(
            fired(&f, req(Verb::Get, "v1/secrets", None, Some("b"), None)),
            None
        );
        assert_eq!(
            fired(
                &f,
                req(Verb::Get, "v1/secrets", Some("status"), Some("a"), None)
            ),
            None
        );
        assert_eq!(
            fired(&f, req(Verb::Get, "v1/secrets", None, Some("a"), None)),
            Some(FaultAction::Fail(503))
        );
        f.clear();
        f.add(FaultRule::garble().verb(Verb::Create).times(1));
        f.add(
            FaultRule::new(429)
                .retry_after(3)
                .delay(Duration::from_millis(5))
                .plain_text(),
        );
        assert_eq!(
            fired(&f, req(Verb::Create, "v1/secrets", None, None, None)),
            Some(FaultAction::Garble)
        );
        let hit = f
            .check(&req(Verb::Create, "v1/secrets", None, None, None))
            .unwrap();
        assert_eq!(
            hit,
            FaultHit {
                action: FaultAction::Fail(429),
                retry_after: Some(3),
                plain_text: true,
                delay: Duration::from_millis(5)
            }
        );
        // the struct-literal form of the original rule still works
        f.add(FaultRule {
            verb: None,
            gvr: None,
            name: Some("x".into()),
            status: 409,
            times: Some(1),
        });
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
