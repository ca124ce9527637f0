//! What the policy benches hand to plugins: a resource and candidate namespaces.

use std::collections::BTreeMap;

use ecr_token_refresh::policy::{CrInfo, NamespaceInfo};

/// The resource `apps/ecr-credentials` for the original sample's registry.
pub fn cr() -> CrInfo {
    CrInfo {
        name: "ecr-credentials".into(),
        namespace: "apps".into(),
        labels: BTreeMap::from([("team".into(), "platform".into())]),
        registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        ..Default::default()
    }
}

/// `n` candidate namespaces `ns-00000…`, every other one labelled `ecr-pull=enabled`.
pub fn namespaces(n: usize) -> Vec<NamespaceInfo> {
    (0..n)
        .map(|i| NamespaceInfo {
            name: format!("ns-{i:05}"),
            labels: BTreeMap::from([
                (
                    "ecr-pull".into(),
                    if i % 2 == 0 { "enabled" } else { "disabled" }.into(),
                ),
                ("kubernetes.io/metadata.name".into(), format!("ns-{i:05}")),
            ]),
            annotations: BTreeMap::new(),
        })
        .collect()
}
