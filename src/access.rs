//! Access rules: the cluster owner decides which namespaces may use which registries and
//! which identities (the `access` section of the operator configuration).
//!
//! Without rules every namespace may use every registry with every identity, as the
//! original operator did. Once at least one rule exists, a resource is allowed only when
//! **every** registry of its Secret ([`crate::api::ValidSpec::registries`]) is allowed,
//! together with its identity ([`crate::api::ValidSpec::identity`]), by one rule whose
//! `namespaces` match the resource's namespace:
//!
//! - `namespaces`: namespace names or globs (`team-a-*`, `team-{a,b}`);
//! - `registries`: 12-digit AWS account IDs (every private registry host of that account,
//!   any region, FIPS, China, GovCloud) or registry host globs
//!   (`*.dkr.ecr.eu-west-1.amazonaws.com`, `public.ecr.aws` for
//!   [ECR Public](https://docs.aws.amazon.com/AmazonECR/latest/public/public-registries.html);
//!   `*` alone is every registry);
//! - `roles`: IAM role ARN globs for `spec.auth.roleArn`, whether the operator assumes the
//!   role ([AssumeRole](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html))
//!   or a ServiceAccount's token does
//!   ([AssumeRoleWithWebIdentity](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html)).
//!   `*` stays within one segment of the role's path (`role/team-a-*` matches
//!   `role/team-a-ci`, not `role/team-a-x/admin`); `**` spans segments (`role/**`);
//! - `operator_identity`: whether the operator's own credentials may be used (resources
//!   without `spec.auth`).
//!
//! Globs are [globset](https://docs.rs/globset) globs (`*`, `?`, `[a-z]`, `{a,b}`), matched
//! against the whole value, case-sensitively. A refused resource gets `Ready=False` with
//! reason `NotPermitted` and no AWS call is made for it.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::api::{Registry, parse_registry};
use crate::ecr::Identity;

/// The `access` section of the operator configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Who may use what. Empty (the default): every namespace may use every registry with
    /// every identity. Otherwise what no rule allows is refused.
    pub rules: Vec<AccessRule>,
}

/// One access rule: the namespaces it is about, and the registries and identities it
/// allows them. Written in the configuration as
///
/// ```yaml
/// - namespaces: ["team-a-*"]
///   registries: ["111111111111", "*.dkr.ecr.eu-west-1.amazonaws.com"]
///   roles: ["arn:aws:iam::111111111111:role/team-a-*"]
///   operator_identity: false
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRule {
    /// Namespace names or globs the rule is about (at least one).
    pub namespaces: Vec<String>,
    /// 12-digit AWS account IDs, or registry host globs, the namespaces may get
    /// credentials for (at least one).
    pub registries: Vec<String>,
    /// IAM role ARN globs (`spec.auth.roleArn`) the namespaces may get tokens as.
    pub roles: Vec<String>,
    /// Whether the namespaces may get tokens with the operator's own identity (resources
    /// without `spec.auth`). Default `false`.
    pub operator_identity: bool,
}

/// A key of the `access` section that is wrong, e.g. `access.rules.1.registries.0`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidRule {
    /// The dotted key, from `access` down (list items by index).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a resource may not be served. The message names the namespace and the registry
/// or identity (role ARN, never a credential or external ID); it goes into the `Ready`
/// condition (reason `NotPermitted`) and a Warning Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No rule for the namespace allows the registry.
    #[error(
        "namespace {namespace:?} may not use registry {registry} (no access rule of the operator allows it)"
    )]
    Registry {
        /// The resource's namespace.
        namespace: String,
        /// The registry host.
        registry: String,
    },
    /// Rules for the namespace allow the registry, but none of them with this identity.
    #[error(
        "namespace {namespace:?} may not use {identity} for registry {registry} (no access rule of the operator allows it)"
    )]
    Identity {
        /// The resource's namespace.
        namespace: String,
        /// The registry host.
        registry: String,
        /// The identity as [`Identity`]'s `Display` shows it: `role <arn>`, `role <arn>
        /// through ServiceAccount <ns>/<name>`, or `the operator's own identity`.
        identity: String,
    },
}

/// The access rules, compiled. `Default` has no rules: everything is allowed.
#[derive(Clone, Default)]
pub struct AccessRules {
    /// `None`: no rules configured, everything allowed.
    rules: Option<Vec<Rule>>,
}

#[derive(Clone)]
struct Rule {
    source: AccessRule,
    namespaces: GlobSet,
    accounts: Vec<String>,
    hosts: GlobSet,
    roles: GlobSet,
}

impl fmt::Debug for AccessRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rules {
            None => f.write_str("AccessRules(open)"),
            Some(rules) => f
                .debug_tuple("AccessRules")
                .field(&rules.iter().map(|r| &r.source).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl AccessRules {
    /// Compiles the `access` section.
    ///
    /// # Errors
    /// Every wrong key, e.g. `access.rules.1.registries.0: "11111111111" is not an account
    /// ID (12 digits)`: an empty `namespaces` or `registries` list, a rule that allows no
    /// identity (no `roles` and `operator_identity: false`), a glob that does not parse,
    /// an account ID that is not 12 digits, a host that is no ECR registry, a role glob
    /// that does not start with `arn:`, a name or host with upper-case letters.
    pub fn compile(config: &AccessConfig) -> Result<Self, Vec<InvalidRule>> {
        if config.rules.is_empty() {
            return Ok(Self::default());
        }
        let mut problems = Vec::new();
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let key = format!("access.rules.{i}");
            if let Some(rule) = compile_rule(&key, rule, &mut problems) {
                rules.push(rule);
            }
        }
        if problems.is_empty() {
            Ok(Self { rules: Some(rules) })
        } else {
            Err(problems)
        }
    }

    /// Rules that allow nothing: what a configuration whose rules do not compile falls
    /// back to, so that a mistake never opens access.
    pub fn deny_all() -> Self {
        Self {
            rules: Some(Vec::new()),
        }
    }

    /// Whether no rules are configured (everything is allowed).
    pub fn is_open(&self) -> bool {
        self.rules.is_none()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.as_ref().map_or(0, Vec::len)
    }

    /// Whether there are no rules (see [`AccessRules::is_open`]: no rules configured
    /// allows everything, [`AccessRules::deny_all`] allows nothing).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a resource in `namespace` may get credentials for `registries` with
    /// `identity`: without rules, always; otherwise only when every registry is allowed,
    /// together with the identity, by one rule whose namespaces match `namespace`. An
    /// empty `registries` needs nothing and is allowed.
    ///
    /// # Errors
    /// [`Denial`] for the first registry (in the order given) that is not allowed: with
    /// [`Denial::Identity`] when some rule for the namespace allows the registry but none
    /// of those the identity, else [`Denial::Registry`].
    pub fn check(
        &self,
        namespace: &str,
        registries: &[Registry],
        identity: &Identity,
    ) -> Result<(), Denial> {
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        let applicable: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.namespaces.is_match(namespace))
            .collect();
        for registry in registries {
            let for_registry: Vec<&&Rule> = applicable
                .iter()
                .filter(|r| r.allows_registry(registry))
                .collect();
            if for_registry.iter().any(|r| r.allows_identity(identity)) {
                continue;
            }
            let (namespace, registry) = (namespace.to_string(), registry.host().to_string());
            return Err(if for_registry.is_empty() {
                Denial::Registry {
                    namespace,
                    registry,
                }
            } else {
                Denial::Identity {
                    namespace,
                    registry,
                    identity: identity.to_string(),
                }
            });
        }
        Ok(())
    }
}

impl Rule {
    fn allows_registry(&self, registry: &Registry) -> bool {
        let by_account = match registry {
            Registry::Private(host) => self.accounts.contains(&host.account_id),
            Registry::Public => false,
        };
        by_account || self.hosts.is_match(registry.host())
    }

    fn allows_identity(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Operator => self.source.operator_identity,
            Identity::Role { arn, .. } => self.roles.is_match(arn),
            Identity::WebIdentity { role_arn, .. } => self.roles.is_match(role_arn),
        }
    }
}

impl AccessConfig {
    /// One comment line for `ecr-token-refresh config` saying what the rules mean.
    pub fn describe(&self) -> String {
        match self.rules.len() {
            0 => "# access: no rules; every namespace may use every registry and identity\n".into(),
            n => format!(
                "# access: {n} rule{}; a resource whose namespace, registries and identity no \
                 rule allows is refused (Ready=False, NotPermitted) without any AWS call\n",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Characters that make an entry a glob rather than a literal.
const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}'];

fn is_glob(s: &str) -> bool {
    s.contains(GLOB_META)
}

fn compile_rule(key: &str, rule: &AccessRule, problems: &mut Vec<InvalidRule>) -> Option<Rule> {
    let before = problems.len();
    let mut bad = |key: String, message: String| problems.push(InvalidRule { key, message });

    if rule.namespaces.is_empty() {
        bad(
            format!("{key}.namespaces"),
            "must list at least one namespace name or glob".into(),
        );
    }
    let mut namespaces = GlobSetBuilder::new();
    for (j, ns) in rule.namespaces.iter().enumerate() {
        let key = format!("{key}.namespaces.{j}");
        if ns.is_empty() {
            bad(key, "must not be empty".into());
        } else if ns.contains(|c: char| c.is_ascii_uppercase() || c == '.' || c == '/') {
            bad(
                key,
                format!("{ns:?} never matches: namespace names are lower-case DNS labels"),
            );
        } else if !is_glob(ns) && !is_namespace_name(ns) {
            bad(key, format!("{ns:?} is not a namespace name"));
        } else {
            match GlobBuilder::new(ns).build() {
                Ok(glob) => {
                    namespaces.add(glob);
                }
                Err(e) => bad(key, format!("{ns:?} is not a glob: {}", e.kind())),
            }
        }
    }

    if rule.registries.is_empty() {
        bad(
            format!("{key}.registries"),
            "must list at least one registry: a 12-digit account ID, a registry host or a host glob"
                .into(),
        );
    }
    let mut accounts = Vec::new();
    let mut hosts = GlobSetBuilder::new();
    for (j, r) in rule.registries.iter().enumerate() {
        let key = format!("{key}.registries.{j}");
        if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) {
            if r.len() == 12 {
                accounts.push(r.clone());
            } else {
                bad(key, format!("{r:?} is not an account ID (12 digits)"));
            }
        } else if r.contains('/') {
            bad(
                key,
                format!("{r:?}: write a registry host or host glob, without scheme or path"),
            );
        } else if r.contains(|c: char| c.is_ascii_uppercase()) {
            bad(
                key,
                format!("{r:?} never matches: registry hosts are lower case"),
            );
        } else if !is_glob(r)
            && let Err(e) = parse_registry(r)
        {
            bad(
                key,
                format!(
                    "{r:?} is neither a 12-digit account ID, an ECR registry host (public.ecr.aws \
                     or <account>.dkr.ecr.<region>.amazonaws.com) nor a host glob: {}",
                    e.why
                ),
            );
        } else {
            match GlobBuilder::new(r).build() {
                Ok(glob) => {
                    hosts.add(glob);
                }
                Err(e) => bad(key, format!("{r:?} is not a glob: {}", e.kind())),
            }
        }
    }

    let mut roles = GlobSetBuilder::new();
    for (j, arn) in rule.roles.iter().enumerate() {
        let key = format!("{key}.roles.{j}");
        if !arn.starts_with("arn:") {
            bad(
                key,
                format!(
                    "{arn:?} is not a role ARN glob; write arn:<partition>:iam::<account>:role/<name>, \
                     with * within a path segment and ** across segments"
                ),
            );
            continue;
        }
        match GlobBuilder::new(arn).literal_separator(true).build() {
            Ok(glob) => {
                roles.add(glob);
            }
            Err(e) => bad(key, format!("{arn:?} is not a glob: {}", e.kind())),
        }
    }
    if rule.roles.is_empty() && !rule.operator_identity {
        bad(
            key.to_string(),
            "allows no identity: list role ARN globs under roles, or set operator_identity: true"
                .into(),
        );
    }

    if problems.len() > before {
        return None;
    }
    let built = (namespaces.build(), hosts.build(), roles.build());
    match built {
        (Ok(namespaces), Ok(hosts), Ok(roles)) => Some(Rule {
            source: rule.clone(),
            namespaces,
            accounts,
            hosts,
            roles,
        }),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            problems.push(InvalidRule {
                key: key.to_string(),
                message: format!("the globs cannot be compiled: {}", e.kind()),
            });
            None
        }
    }
}

/// A Kubernetes namespace name: a DNS-1123 label.
fn is_namespace_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
