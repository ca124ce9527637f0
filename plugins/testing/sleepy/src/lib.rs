//! Test plugin: the naming hook sleeps for an hour (blocking in host code,
//! where no deadline can interrupt it; the host must refuse to block).

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
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Ok("slept".to_owned())
    }
}

export!(Plugin);
