//! The request log: one record per resource request (what the counters
//! count), so that tests can ask "which writes reached this object, and
//! when" rather than only "how many".

use std::collections::VecDeque;
use std::time::Instant;

use crate::faults::Verb;

/// How many records are kept; older ones are dropped first.
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// One resource request as the stand-in saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived (before any latency or fault delay).
    pub at: Instant,
    /// The verb.
    pub verb: Verb,
    /// The resource, `v1/secrets` or `group/version/plural`.
    pub gvr: String,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    /// The namespace of the URL (`None` for cluster-scoped and
    /// all-namespaces requests).
    pub namespace: Option<String>,
    /// The object name: from the URL, or for a create the name of the
    /// created object (or the body's name when the create failed).
    pub name: Option<String>,
    /// The HTTP status code answered (200 for a watch that started).
    pub status: u16,
}

impl RequestRecord {
    /// Whether the request was a write (create, update, patch, delete).
    pub fn is_write(&self) -> bool {
        self.verb.is_write()
    }

    /// Whether the request addressed this object (`gvr` without subresource
    /// suffix, namespace, name).
    pub fn is_for(&self, gvr: &str, namespace: Option<&str>, name: &str) -> bool {
        self.gvr == gvr
            && self.namespace.as_deref() == namespace
            && self.name.as_deref() == Some(name)
    }

    /// Whether the request succeeded (2xx).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Bounded log of [`RequestRecord`]s.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    records: VecDeque<RequestRecord>,
}

impl RequestLog {
    pub(crate) fn push(&mut self, r: RequestRecord) {
        if self.records.len() == REQUEST_LOG_CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded() {
        let mut log = RequestLog::default();
        let rec = |n: usize| RequestRecord {
            at: Instant::now(),
            verb: Verb::Patch,
            gvr: "v1/secrets".into(),
            subresource: None,
            namespace: Some("default".into()),
            name: Some(format!("s{n}")),
            status: 200,
        };
        for n in 0..REQUEST_LOG_CAPACITY + 3 {
            log.push(rec(n));
        }
        let all = log.snapshot();
        assert_eq!(all.len(), REQUEST_LOG_CAPACITY);
        assert_eq!(all[0].name.as_deref(), Some("s3"));
        assert!(all[0].is_write() && all[0].succeeded());
        assert!(all[0].is_for("v1/secrets", Some("default"), "s3"));
        log.clear();
        assert!(log.snapshot().is_empty());
    }
}
