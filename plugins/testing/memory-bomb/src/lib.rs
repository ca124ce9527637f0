//! Test plugin: every hook allocates memory until it runs out (exercises the
//! memory limit).

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::ecr_token_refresh::policy::{fanout, naming, retry, settings};

struct Plugin;

fn bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Reserve without touching: memory grows, little fuel is spent.
        hoard.push(Vec::<u8>::with_capacity(1 << 20));
        core::hint::black_box(&hoard);
    }
}

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        bomb()
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        _: String,
        _: fanout::CrInfo,
        _: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        bomb()
    }
}

impl retry::Guest for Plugin {
    fn decide(
        _: String,
        _: retry::CrInfo,
        _: retry::Failure,
        _: Option<u64>,
    ) -> Result<retry::RetryDecision, String> {
        bomb()
    }
}

export!(Plugin);
