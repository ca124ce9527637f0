//! `spec.secretTemplate`: labels and annotations added to every Secret written, and the
//! format the credentials are written in.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SpecError;

/// Most labels, and most annotations, in `spec.secretTemplate.metadata`.
pub const MAX_TEMPLATE_ENTRIES: usize = 32;
/// Longest annotation value in `spec.secretTemplate.metadata.annotations`, in bytes.
pub const MAX_ANNOTATION_VALUE: usize = 4096;

/// What every Secret of the resource looks like besides its credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels and annotations added to every Secret written. The operator's own labels and
    /// annotations (`app.kubernetes.io/managed-by`, `ecr.aws.edenlab.io/*`, and for the Argo
    /// CD format `argocd.argoproj.io/secret-type`) win: a template cannot override or remove
    /// them. A key removed from the template stays on Secrets already written until they
    /// are recreated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,

    /// How the credentials are written:
    ///
    /// - `dockerconfigjson` (default, the original): one `kubernetes.io/dockerconfigjson`
    ///   Secret, key `.dockerconfigjson`, one `auths` entry per registry.
    /// - `argocd-repository`: an Argo CD declarative repository Secret for OCI Helm charts
    ///   (type `Opaque`, label `argocd.argoproj.io/secret-type: repository`, keys `type: helm`,
    ///   `enableOCI: "true"`, `url` (the registry host), `name`, `username: AWS`, `password`),
    ///   one per registry, named `<name>-argocd-<registry>`.
    /// - `basic`: a `kubernetes.io/basic-auth` Secret with keys `username` (`AWS`) and
    ///   `password`, one per registry, named `<name>-basic-<registry>`.
    ///
    /// `<name>` is the name the naming policy gives (the resource's name by default) and
    /// `<registry>` is `<account>-<region>` (with `-fips` for a FIPS host) or `ecr-public`.
    /// Changing the format writes the new Secrets first and removes the old ones after.
    #[serde(default, skip_serializing_if = "SecretFormat::is_default")]
    pub format: SecretFormat,
}

/// Labels and annotations of `spec.secretTemplate`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels added to every Secret (Kubernetes label syntax; at most 32).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_TEMPLATE_ENTRIES))]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every Secret (at most 32, values up to 4096 bytes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_TEMPLATE_ENTRIES))]
    pub annotations: BTreeMap<String, String>,
}

/// The format credentials are written in (`spec.secretTemplate.format`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SecretFormat {
    /// `kubernetes.io/dockerconfigjson`, every registry in one Secret (the default).
    #[default]
    #[serde(rename = "dockerconfigjson")]
    DockerConfigJson,
    /// An Argo CD repository Secret per registry.
    #[serde(rename = "argocd-repository")]
    ArgocdRepository,
    /// A `kubernetes.io/basic-auth` Secret per registry.
    #[serde(rename = "basic")]
    Basic,
}

impl SecretFormat {
    /// Whether this is the default (`dockerconfigjson`).
    pub fn is_default(&self) -> bool {
        *self == SecretFormat::DockerConfigJson
    }

    /// The name used in the spec, e.g. `argocd-repository`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SecretFormat::DockerConfigJson => "dockerconfigjson",
            SecretFormat::ArgocdRepository => "argocd-repository",
            SecretFormat::Basic => "basic",
        }
    }
}

impl SecretTemplate {
    /// The template's labels (empty when none).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default()
    }

    /// The template's annotations (empty when none).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_ref()
            .map(|m| m.annotations.clone())
            .unwrap_or_default()
    }

    /// Checks the labels and annotations the way the API server would check them on the
    /// Secret ([syntax and character set](https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set)).
    ///
    /// # Errors
    /// A [`SpecError`] naming `secretTemplate.metadata.labels` or `…annotations` and the key.
    pub fn validate(&self) -> Result<(), SpecError> {
        let Some(meta) = &self.metadata else {
            return Ok(());
        };
        let labels = "secretTemplate.metadata.labels";
        let annotations = "secretTemplate.metadata.annotations";
        for (field, map) in [(labels, &meta.labels), (annotations, &meta.annotations)] {
            if map.len() > MAX_TEMPLATE_ENTRIES {
                return Err(SpecError {
                    field,
                    message: format!("has {} entries, at most {MAX_TEMPLATE_ENTRIES}", map.len()),
                });
            }
            for key in map.keys() {
                if let Err(why) = check_key(key) {
                    return Err(SpecError {
                        field,
                        message: format!("key {key:?} {why}"),
                    });
                }
            }
        }
        for (key, value) in &meta.labels {
            if !is_label_value(value) {
                return Err(SpecError {
                    field: labels,
                    message: format!(
                        "the value of {key:?} is not a label value (at most 63 characters: \
                         letters, digits, '-', '_', '.', beginning and ending alphanumeric)"
                    ),
                });
            }
        }
        for (key, value) in &meta.annotations {
            if value.len() > MAX_ANNOTATION_VALUE {
                return Err(SpecError {
                    field: annotations,
                    message: format!(
                        "the value of {key:?} has {} bytes, at most {MAX_ANNOTATION_VALUE}",
                        value.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A qualified name: an optional DNS-subdomain prefix (at most 253) and `/`, then a name of
/// at most 63 characters (alphanumerics, `-`, `_`, `.`, beginning and ending alphanumeric).
fn check_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !dns {
            return Err("has a prefix that is not a DNS subdomain");
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(
            "is not a qualified name (at most 63 characters: letters, digits, '-', '_', '.', beginning and ending alphanumeric, after an optional DNS prefix and '/')",
        );
    }
    Ok(())
}

/// Whether `v` is a valid label value (empty, or at most 63 alphanumerics, `-`, `_`, `.`,
/// beginning and ending alphanumeric).
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(yaml: &str) -> SecretTemplate {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn formats_parse_by_their_spec_names_and_default_to_dockerconfigjson() {
        assert_eq!(template("{}").format, SecretFormat::DockerConfigJson);
        assert_eq!(
            template("format: argocd-repository").format,
            SecretFormat::ArgocdRepository
        );
        assert_eq!(template("format: basic").format, SecretFormat::Basic);
        assert!(serde_yaml::from_str::<SecretTemplate>("format: helm").is_err());
        assert_eq!(serde_yaml::to_string(&template("{}")).unwrap(), "{}\n");
    }

    #[test]
    fn labels_and_annotations_are_checked_like_the_api_server_does() {
        let ok = template(
            "metadata: {labels: {team: a, app.kubernetes.io/part-of: shop}, \
             annotations: {argocd.argoproj.io/sync-options: Prune=false}}",
        );
        assert_eq!(ok.validate(), Ok(()));
        let field = |yaml: &str| template(yaml).validate().map_err(|e| e.to_string());
        let e = field("metadata: {labels: {team: 'not ok'}}").unwrap_err();
        assert!(
            e.starts_with("spec.secretTemplate.metadata.labels: the value of \"team\""),
            "{e}"
        );
        let e = field("metadata: {labels: {'Bad_Prefix/x': y}}").unwrap_err();
        assert!(e.contains("key \"Bad_Prefix/x\" has a prefix"), "{e}");
        let e = field("metadata: {annotations: {'': y}}").unwrap_err();
        assert!(
            e.starts_with("spec.secretTemplate.metadata.annotations: key \"\""),
            "{e}"
        );
        let long = "x".repeat(MAX_ANNOTATION_VALUE + 1);
        let e = field(&format!("metadata: {{annotations: {{a: {long}}}}}")).unwrap_err();
        assert!(e.contains("at most 4096"), "{e}");
        let many: Vec<String> = (0..33).map(|i| format!("k{i}: v")).collect();
        let e = field(&format!("metadata: {{labels: {{{}}}}}", many.join(", "))).unwrap_err();
        assert!(e.contains("33 entries"), "{e}");
    }
}
