//! Test plugin: selects every candidate plus `kube-system` and
//! `not-a-candidate`, which were not offered. Exports only the fan-out hook.

wit_bindgen::generate!({ path: "../../../wit", world: "fanout-policy" });

use exports::ecr_token_refresh::policy::{fanout, settings};

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl fanout::Guest for Plugin {
    fn select_namespaces(
        _: String,
        _: fanout::CrInfo,
        candidates: Vec<fanout::NamespaceInfo>,
    ) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = candidates.into_iter().map(|ns| ns.name).collect();
        out.push("kube-system".to_owned());
        out.push("not-a-candidate".to_owned());
        Ok(out)
    }
}

export!(Plugin);
