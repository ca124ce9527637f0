//! Test plugin: every hook writes a line to stderr, then panics (a trap).

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::ecr_token_refresh::policy::{fanout, naming, retry, settings};

struct Plugin;

fn boom(hook: &str) -> ! {
    eprintln!("trap plugin: about to panic in {hook}");
    panic!("deliberate panic in {hook}")
}

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        boom("naming")
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        _: String,
        _: fanout::CrInfo,
        _: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        boom("fanout")
    }
}

impl retry::Guest for Plugin {
    fn decide(
        _: String,
        _: retry::CrInfo,
        _: retry::Failure,
        _: Option<u64>,
    ) -> Result<retry::RetryDecision, String> {
        boom("retry")
    }
}

export!(Plugin);
