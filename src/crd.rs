//! The CustomResourceDefinition YAML generated from the Rust types.

use kube::CustomResourceExt;

use crate::api::ECRTokenRefresh;

/// The CRD of `ECRTokenRefresh` as YAML, as committed under `config/crd/`.
///
/// # Errors
/// Only if serialisation fails, which would be a bug in the types.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ECRTokenRefresh::crd())
}
