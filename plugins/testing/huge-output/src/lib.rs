//! Test plugin: answers far more than asked. Naming returns a 1 MiB name,
//! fan-out returns every candidate 100 times, retry gives up with a 1 MiB
//! reason.

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::ecr_token_refresh::policy::{fanout, naming, retry, settings};

struct Plugin;

const MIB: usize = 1 << 20;

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        Ok("a".repeat(MIB))
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        _: String,
        _: fanout::CrInfo,
        candidates: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        let names: Vec<String> = candidates.into_iter().map(|ns| ns.name).collect();
        Ok((0..100).flat_map(|_| names.iter().cloned()).collect())
    }
}

impl retry::Guest for Plugin {
    fn decide(
        _: String,
        _: retry::CrInfo,
        _: retry::Failure,
        _: Option<u64>,
    ) -> Result<retry::RetryDecision, String> {
        Ok(retry::RetryDecision::GiveUp("x".repeat(MIB)))
    }
}

export!(Plugin);
