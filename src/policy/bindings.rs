//! Host bindings generated from `wit/policy.wit` (private to `policy`).
//!
//! The `policy` world exports all hooks; a plugin built for a single-hook
//! world is handled by looking each exported interface up separately
//! (`GuestIndices::new` fails for interfaces the component does not export).

wasmtime::component::bindgen!({
    path: "wit/policy.wit",
    world: "policy",
});

pub(crate) use self::ecr_token_refresh::policy::types;
pub(crate) use exports::ecr_token_refresh::policy::{fanout, naming, retry, settings};

use super::{CrInfo, Failure, FailureKind, NamespaceInfo, RetryDecision};

fn pairs(m: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn to_wit_cr(cr: &CrInfo) -> types::CrInfo {
    types::CrInfo {
        name: cr.name.clone(),
        namespace: cr.namespace.clone(),
        labels: pairs(&cr.labels),
        annotations: pairs(&cr.annotations),
        registry: cr.registry.clone(),
        account_id: cr.account_id.clone(),
        region: cr.region.clone(),
        parameters: pairs(&cr.parameters),
    }
}

pub(crate) fn to_wit_ns(ns: &NamespaceInfo) -> types::NamespaceInfo {
    types::NamespaceInfo {
        name: ns.name.clone(),
        labels: pairs(&ns.labels),
        annotations: pairs(&ns.annotations),
    }
}

pub(crate) fn to_wit_failure(f: &Failure) -> types::Failure {
    use FailureKind as K;
    use types::FailureKind as W;
    types::Failure {
        kind: match f.kind {
            K::Throttled => W::Throttled,
            K::AccessDenied => W::AccessDenied,
            K::Network => W::Network,
            K::ServerError => W::ServerError,
            K::InvalidResponse => W::InvalidResponse,
            K::Other => W::Other,
        },
        message: f.message.clone(),
        attempt: f.attempt,
    }
}

/// Converts a plugin's retry decision.
pub(crate) fn from_wit_decision(d: types::RetryDecision) -> RetryDecision {
    match d {
        types::RetryDecision::RetryAfterMs(ms) => {
            RetryDecision::RetryAfter(std::time::Duration::from_millis(ms))
        }
        types::RetryDecision::GiveUp(reason) => RetryDecision::GiveUp { reason },
    }
}
