//! Resource type registry entries.

/// A resource type served by the stand-in (one group/version/plural).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Plural resource name, e.g. `secrets`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the type has a `/status` subresource (then `.status` is only
    /// writable through it, and ignored on create and on main-resource writes).
    pub has_status_subresource: bool,
}

impl ResourceType {
    /// Convenience constructor.
    pub fn new(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        has_status_subresource: bool,
    ) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
            has_status_subresource,
        }
    }

    /// `apiVersion` of objects of this type (`v1` or `group/version`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key used by the library API and the counters:
    /// `v1/secrets` or `group/version/plural`.
    pub fn gvr(&self) -> String {
        format!("{}/{}", self.api_version(), self.plural)
    }

    /// `secrets` for core types, `plural.group` otherwise (as used in messages).
    pub(crate) fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind` for core types, `Kind.group` otherwise (as `GroupKind.String()`
    /// renders it in Invalid messages).
    ///
    /// `events.k8s.io` Events are validated by the core Event strategy, so
    /// the real server names them `Event` (the core kind) in its errors.
    pub(crate) fn qualified_kind(&self) -> String {
        let group = self.error_group();
        if group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{group}", self.kind)
        }
    }

    /// The group the real server reports in Invalid errors (see
    /// [`ResourceType::qualified_kind`]).
    pub(crate) fn error_group(&self) -> &str {
        if self.group == "events.k8s.io" && self.kind == "Event" {
            ""
        } else {
            &self.group
        }
    }

    /// Built-in (non-CRD) types accept strategic merge patches; custom
    /// resources answer 415 like the real API server.
    pub(crate) fn supports_strategic_merge(&self) -> bool {
        self.is_builtin()
    }

    /// Whether the type is compiled into the real API server (core group,
    /// groups without a dot, `*.k8s.io`) rather than served from a CRD.
    pub(crate) fn is_builtin(&self) -> bool {
        !self.group.contains('.') || self.group.ends_with(".k8s.io")
    }

    /// The etcd key the real server stores an object under (only used in
    /// error messages that quote it): `/registry/<plural>/<ns>/<name>` for
    /// built-in types, `/registry/<group>/<plural>/...` for custom resources.
    pub(crate) fn etcd_key(&self, ns: Option<&str>, name: &str) -> String {
        let mut key = String::from("/registry/");
        if !self.is_builtin() || self.group == "apiextensions.k8s.io" {
            key.push_str(&self.group);
            key.push('/');
        }
        key.push_str(&self.plural);
        if let Some(ns) = ns.filter(|_| self.namespaced) {
            key.push('/');
            key.push_str(ns);
        }
        key.push('/');
        key.push_str(name);
        key
    }

    /// Whether a DELETE that removes the object at once answers with the
    /// object (`ReturnDeletedObject: true` in the type's registry, e.g.
    /// ServiceAccounts, Namespaces, Pods) rather than a `Status` of
    /// success (Secrets, ConfigMaps, custom resources, ...).
    pub(crate) fn returns_deleted_object(&self) -> bool {
        self.group.is_empty()
            && matches!(
                self.plural.as_str(),
                "serviceaccounts" | "namespaces" | "pods"
            )
    }

    /// The types every `StandIn` starts with.
    pub fn builtins() -> Vec<ResourceType> {
        vec![
            Self::new("", "v1", "Secret", "secrets", true, false),
            Self::new("", "v1", "ConfigMap", "configmaps", true, false),
            Self::new("", "v1", "Namespace", "namespaces", false, true),
            Self::new("", "v1", "ServiceAccount", "serviceaccounts", true, false),
            Self::new("", "v1", "Event", "events", true, false),
            Self::new("events.k8s.io", "v1", "Event", "events", true, false),
            Self::new("coordination.k8s.io", "v1", "Lease", "leases", true, false),
            Self::new(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
            ),
            Self::new(
                "ecr.aws.edenlab.io",
                "v1alpha1",
                "ECRTokenRefresh",
                "ecrtokenrefreshes",
                true,
                true,
            ),
            Self::new(
                "ecr.aws.edenlab.io",
                "v1alpha1",
                "ClusterECRTokenRefresh",
                "clusterecrtokenrefreshes",
                false,
                true,
            ),
        ]
    }
}

/// Split an `apiVersion` into (group, version).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}
