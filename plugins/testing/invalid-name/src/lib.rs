//! Test plugin: names every Secret `Not_A-Valid.Name!` (not a DNS-1123
//! subdomain). Exports only the naming hook.

wit_bindgen::generate!({ path: "../../../wit", world: "naming-policy" });

use exports::ecr_token_refresh::policy::{naming, settings};

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        Ok("Not_A-Valid.Name!".to_owned())
    }
}

export!(Plugin);
