//! Host bindings generated from `wit/policy.wit` (private to `policy`).
//!
//! The `policy` world exports all hooks; a plugin built for a single-hook
//! world is handled by looking each exported interface up separately
//! (`GuestIndices::new` fails for interfaces the component does not export).

wasmtime::component::bindgen!({
    path: "wit/policy.wit",
    world: "policy",
});

pub(crate) use ecr_token_refresh::policy::types;
pub(crate) use exports::ecr_token_refresh::policy::{fanout, naming, retry, settings};
