//! Test plugin: refuses every settings document, so it never loads.

wit_bindgen::generate!({ path: "../../../wit", world: "naming-policy" });

use exports::ecr_token_refresh::policy::{naming, settings};

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(settings: String) -> Result<(), String> {
        Err(format!(
            "settings-rejected refuses every settings document (got {settings})"
        ))
    }
}

impl naming::Guest for Plugin {
    fn secret_name(_: String, _: naming::CrInfo, _: String) -> Result<String, String> {
        Ok("never-called".to_owned())
    }
}

export!(Plugin);
