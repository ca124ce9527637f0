//! Test plugin: every hook loops forever (exercises the fuel and epoch limits).

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::ecr_token_refresh::policy::{fanout, naming, retry, settings};

struct Plugin;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        spin()
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        _: String,
        _: fanout::CrInfo,
        _: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        spin()
    }
}

impl retry::Guest for Plugin {
    fn decide(
        _: String,
        _: retry::CrInfo,
        _: retry::Failure,
        _: Option<u64>,
    ) -> Result<retry::RetryDecision, String> {
        spin()
    }
}

export!(Plugin);
