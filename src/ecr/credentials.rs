//! What one resource's Secrets hold: a token per registry host.
//!
//! A resource may name several registries (`spec.ecrRegistry` and
//! `spec.additionalRegistries`), each served by the token of its own key (identity,
//! region, FIPS, private or ECR Public; see [`TokenKey`]). Two hosts of one key (two
//! accounts in one region) share one token: a `GetAuthorizationToken` token serves every
//! registry its principal may read in that region.

use std::sync::Arc;

use jiff::Timestamp;

use super::{HeldToken, TokenKey};

/// One registry host of a resource and the token key that serves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// The registry host, the key under `auths` in the `.dockerconfigjson`, e.g.
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com` or `public.ecr.aws`.
    pub host: String,
    /// The key whose token serves it.
    pub key: TokenKey,
}

/// The tokens of one resource's Secrets: one per registry host, in spec order
/// (`spec.ecrRegistry` first). `Debug` never shows a password.
#[derive(Debug, Clone)]
pub struct Credentials {
    entries: Vec<(String, Arc<HeldToken>)>,
    /// The earliest time one of the tokens was obtained.
    pub fetched_at: Timestamp,
    /// The earliest expiry of the tokens: when the Secret stops working for some registry.
    pub expires_at: Timestamp,
}

impl Credentials {
    /// The credentials holding `entries` (host, token), in that order; `None` when empty.
    pub fn new(entries: Vec<(String, Arc<HeldToken>)>) -> Option<Self> {
        let fetched_at = entries.iter().map(|(_, t)| t.fetched_at).min()?;
        let expires_at = entries.iter().map(|(_, t)| t.token.expires_at).min()?;
        Some(Self {
            entries,
            fetched_at,
            expires_at,
        })
    }

    /// The credentials for `wanted` hosts from one token per key (`tokens` holds each key of
    /// `wanted` at least once); `None` when a key has no token or `wanted` is empty.
    pub fn assemble(wanted: &[Wanted], tokens: &[Arc<HeldToken>]) -> Option<Self> {
        let entries = wanted
            .iter()
            .map(|w| {
                tokens
                    .iter()
                    .find(|t| t.key == w.key)
                    .map(|t| (w.host.clone(), Arc::clone(t)))
            })
            .collect::<Option<Vec<_>>>()?;
        Self::new(entries)
    }

    /// The hosts and their tokens, in order.
    pub fn entries(&self) -> &[(String, Arc<HeldToken>)] {
        &self.entries
    }

    /// Whether these credentials are for exactly `wanted`: the same hosts in the same order,
    /// each with a token of its wanted key (a spec that moved a host to another region or
    /// identity needs another token).
    pub fn serves(&self, wanted: &[Wanted]) -> bool {
        self.entries.len() == wanted.len()
            && self
                .entries
                .iter()
                .zip(wanted)
                .all(|((host, token), w)| *host == w.host && token.key == w.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecr::{AuthorizationToken, RegistryKind};
    use secrecy::SecretString;

    fn held(region: &str, fetched: &str, expires: &str) -> Arc<HeldToken> {
        Arc::new(HeldToken {
            key: TokenKey::operator(region, false),
            token: AuthorizationToken {
                username: "AWS".into(),
                password: SecretString::from(format!("pw-{region}")),
                expires_at: expires.parse().unwrap(),
                proxy_endpoint: None,
            },
            fetched_at: fetched.parse().unwrap(),
        })
    }

    fn wanted(host: &str, region: &str) -> Wanted {
        Wanted {
            host: host.into(),
            key: TokenKey::operator(region, false),
        }
    }

    #[test]
    fn expiry_and_fetch_time_are_the_earliest_and_keys_are_shared() {
        let east = held("us-east-1", "2026-01-01T00:00:00Z", "2026-01-01T12:00:00Z");
        let west = held("eu-west-1", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z");
        let want = [
            wanted("111111111111.dkr.ecr.us-east-1.amazonaws.com", "us-east-1"),
            wanted("222222222222.dkr.ecr.us-east-1.amazonaws.com", "us-east-1"),
            wanted("111111111111.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"),
        ];
        let c = Credentials::assemble(&want, &[Arc::clone(&west), Arc::clone(&east)]).unwrap();
        assert_eq!(c.fetched_at.to_string(), "2026-01-01T00:00:00Z");
        assert_eq!(c.expires_at.to_string(), "2026-01-01T02:00:00Z");
        assert!(Arc::ptr_eq(&c.entries()[0].1, &c.entries()[1].1));
        assert!(c.serves(&want));
        assert!(!c.serves(&want[..2]));
        let mut moved = want.clone();
        moved[2].key.kind = RegistryKind::Public;
        assert!(!c.serves(&moved));
        // A key without a token: nothing.
        assert!(Credentials::assemble(&want, &[east]).is_none());
    }
}
