//! Fan-out plugin: the Secret goes to every candidate namespace that carries
//! a given label (optionally with a given value), except `kube-*` namespaces.
//!
//! Settings (JSON): `{"label": "ecr-pull", "value": "enabled"}`; `label` is
//! required, `value` is optional (without it, any value matches).

wit_bindgen::generate!({ path: "../../wit", world: "fanout-policy" });

use exports::ecr_token_refresh::policy::{fanout, settings};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    label: String,
    #[serde(default)]
    value: Option<String>,
}

fn parse(settings: &str) -> Result<Settings, String> {
    let s: Settings =
        serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))?;
    if s.label.is_empty() {
        return Err("invalid settings: label must not be empty".to_owned());
    }
    Ok(s)
}

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(settings: String) -> Result<(), String> {
        parse(&settings).map(|_| ())
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        settings: String,
        _cr: fanout::CrInfo,
        candidates: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        let s = parse(&settings)?;
        Ok(candidates
            .into_iter()
            .filter(|ns| !ns.name.starts_with("kube-"))
            .filter(|ns| {
                ns.labels
                    .iter()
                    .any(|(k, v)| *k == s.label && s.value.as_ref().is_none_or(|want| want == v))
            })
            .map(|ns| ns.name)
            .collect())
    }
}

export!(Plugin);
