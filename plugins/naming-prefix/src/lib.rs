//! Naming plugin: the Secret is called `<prefix>-<account>-<region>`.
//!
//! Settings (JSON): `{"prefix": "ecr"}`; `prefix` defaults to `ecr` and must
//! be lowercase alphanumerics and `-`, starting with a letter, at most 200
//! characters.

wit_bindgen::generate!({ path: "../../wit", world: "naming-policy" });

use exports::ecr_token_refresh::policy::{naming, settings};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_prefix() -> String {
    "ecr".to_owned()
}

fn parse(settings: &str) -> Result<Settings, String> {
    let s: Settings =
        serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))?;
    let ok = s.prefix.len() <= 200
        && s.prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && s.prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(format!(
            "invalid settings: prefix {:?} must be lowercase alphanumerics and '-', \
             start with a letter, at most 200 characters",
            s.prefix
        ));
    }
    Ok(s)
}

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(settings: String) -> Result<(), String> {
        parse(&settings).map(|_| ())
    }
}

impl naming::Guest for Plugin {
    fn secret_name(
        settings: String,
        cr: naming::CrInfo,
        _target_namespace: String,
    ) -> Result<String, String> {
        let s = parse(&settings)?;
        if cr.account_id.is_empty() || cr.region.is_empty() {
            return Err(format!(
                "registry {:?} has no account id or region",
                cr.registry
            ));
        }
        Ok(format!("{}-{}-{}", s.prefix, cr.account_id, cr.region))
    }
}

export!(Plugin);
