//! The one place tokens live: a shared in-memory cache of ECR authorization tokens, one per
//! key, fetched by a single caller at a time (single flight).
//!
//! An ECR authorization token serves every registry its principal may read in its region
//! (the `registryIds` parameter of `GetAuthorizationToken` is deprecated), so resources
//! that use the same identity in the same region share one token: the first one due
//! fetches it, the others take it while it is fresh enough for them. Callers say what
//! "fresh enough" means ([`TokenCache::get`]'s `accept`), since that depends on each
//! resource's `frequency`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;

use super::{AuthorizationToken, EcrError, Identity, RegistryKind, TokenRequest, TokenSource};

/// A token and when it was obtained. `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct HeldToken {
    /// Who asked, where: a token serves only resources with the same key.
    pub key: TokenKey,
    /// The token.
    pub token: AuthorizationToken,
    /// When it was obtained from ECR (whole seconds; the request was sent at or after it).
    pub fetched_at: Timestamp,
}

/// What tokens are shared by: the identity asking, the region (the partition follows from
/// it), whether the FIPS endpoint is used, and private registry or ECR Public.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    /// Whose credentials ask.
    pub identity: Identity,
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Whether the token comes from the FIPS endpoint.
    pub fips: bool,
    /// Private registry or ECR Public.
    pub kind: RegistryKind,
}

impl TokenKey {
    /// The key a request is served under.
    pub fn of(request: &TokenRequest) -> Self {
        Self {
            identity: request.identity.clone(),
            region: request.region.clone(),
            fips: request.fips,
            kind: request.kind,
        }
    }

    /// The key of the operator's own identity for a private registry in `region`.
    pub fn operator(region: &str, fips: bool) -> Self {
        Self {
            identity: Identity::Operator,
            region: region.to_string(),
            fips,
            kind: RegistryKind::Private,
        }
    }
}

/// The result of [`TokenCache::get`].
#[derive(Debug)]
pub struct Obtained {
    /// The token, or why none could be had.
    pub result: Result<Arc<HeldToken>, EcrError>,
    /// Whether this caller made the ECR call (`false`: a held token, or the result of a
    /// call another caller made while this one waited).
    pub called: bool,
    /// How the cache served it (for the `ecr_token_refresh_token_cache_lookups_total`
    /// metric).
    pub lookup: Lookup,
}

/// How [`TokenCache::get`] served a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The held token was fresh enough: no call.
    Hit,
    /// Nothing held: a call.
    Miss,
    /// A token was held but not fresh enough for the caller: a call.
    Refresh,
    /// The result of a call another caller made while this one waited.
    Shared,
}

impl Lookup {
    /// The metric label: `hit`, `miss`, `refresh` or `shared`.
    pub fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Refresh => "refresh",
            Lookup::Shared => "shared",
        }
    }
}

#[derive(Default)]
struct Slot {
    held: Option<Arc<HeldToken>>,
    /// When the last call finished, and its result.
    last: Option<(Instant, Result<Arc<HeldToken>, EcrError>)>,
}

/// `t` rounded down to whole seconds (RFC 3339 in status and annotations has no fraction).
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    t.round(
        jiff::TimestampRound::new()
            .smallest(jiff::Unit::Second)
            .mode(jiff::RoundMode::Floor),
    )
    .unwrap_or(t)
}

/// Shared, single-flight token cache over a [`TokenSource`].
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache over `source`.
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self {
            source,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(key.clone()).or_default())
    }

    /// A token for `request`: the held one when `accept` takes it, else a new one from
    /// ECR. One call per key at a time: callers that arrive while a call is under way wait
    /// for it and share its result (a failure too, so a failing ECR is asked once, not once
    /// per waiting resource).
    pub async fn get(
        &self,
        request: &TokenRequest,
        accept: impl Fn(&HeldToken) -> bool,
    ) -> Obtained {
        let arrived = Instant::now();
        let slot = self.slot(&TokenKey::of(request));
        let mut slot = slot.lock().await;
        if let Some(held) = slot.held.as_ref().filter(|h| accept(h)) {
            return Obtained {
                result: Ok(Arc::clone(held)),
                called: false,
                lookup: Lookup::Hit,
            };
        }
        if let Some((at, result)) = &slot.last
            && *at >= arrived
        {
            // A failure is about the key, not the registry of whoever made the call: never
            // show another resource's registry ID.
            let result = result.clone().map_err(|mut e| {
                e.registry_id.clone_from(&request.registry_id);
                e
            });
            return Obtained {
                result,
                called: false,
                lookup: Lookup::Shared,
            };
        }
        let lookup = if slot.held.is_some() {
            Lookup::Refresh
        } else {
            Lookup::Miss
        };
        let fetched_at = whole_seconds(Timestamp::now());
        let key = TokenKey::of(request);
        let result = self
            .source
            .authorization_token(request)
            .await
            .map(|mut token| {
                // Status and annotations keep whole seconds: so does the held token, so
                // that they compare equal after a restart.
                token.expires_at = whole_seconds(token.expires_at);
                Arc::new(HeldToken {
                    key,
                    token,
                    fetched_at,
                })
            });
        if let Ok(held) = &result {
            slot.held = Some(Arc::clone(held));
        }
        slot.last = Some((Instant::now(), result.clone()));
        Obtained {
            result,
            called: true,
            lookup,
        }
    }

    /// The held token for `request` when `accept` takes it, without asking ECR (and
    /// without waiting for a call under way: `None` then).
    pub fn peek(
        &self,
        request: &TokenRequest,
        accept: impl Fn(&HeldToken) -> bool,
    ) -> Option<Arc<HeldToken>> {
        let slot = self.slot(&TokenKey::of(request));
        let slot = slot.try_lock().ok()?;
        slot.held.as_ref().filter(|h| accept(h)).cloned()
    }

    /// Drops tokens that expired before `now` (and their slots), so the cache holds only
    /// what may still be used.
    pub fn evict_expired(&self, now: Timestamp) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(mut s) => {
                if s.held.as_ref().is_some_and(|h| h.token.expires_at <= now) {
                    s.held = None;
                }
                s.held.is_some()
            }
            Err(_) => true,
        });
    }

    /// Drops the slots of keys for which `in_use` is false (no resource uses them any
    /// more: a spec moved to another identity or region, or the resource is gone), except
    /// where a call is under way. Tokens are kept only for keys that resources use, so the
    /// cache grows with the resources that exist, not with every identity a tenant ever
    /// named.
    pub fn retain_keys(&self, in_use: impl Fn(&TokenKey) -> bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|key, slot| in_use(key) || slot.try_lock().is_err());
    }

    /// How many keys hold a slot (for tests and metrics).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key holds a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecr::FailureKind;
    use async_trait::async_trait;
    use secrecy::{ExposeSecret, SecretString};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;

    #[derive(Default)]
    struct Counting {
        calls: AtomicU32,
        fail: AtomicBool,
    }

    #[async_trait]
    impl TokenSource for Counting {
        async fn authorization_token(
            &self,
            request: &TokenRequest,
        ) -> Result<AuthorizationToken, EcrError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(EcrError {
                    kind: FailureKind::AccessDenied,
                    registry_id: request.registry_id.clone(),
                    region: request.region.clone(),
                    message: "denied".into(),
                });
            }
            Ok(AuthorizationToken {
                username: "AWS".into(),
                password: SecretString::from(format!("token-{n}")),
                expires_at: Timestamp::now() + jiff::SignedDuration::from_hours(12),
                proxy_endpoint: None,
            })
        }
    }

    fn request(region: &str) -> TokenRequest {
        TokenRequest {
            region: region.into(),
            registry_id: "123456789012".into(),
            fips: false,
            identity: Default::default(),
            kind: Default::default(),
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call_and_later_ones_the_held_token() {
        let source = Arc::new(Counting::default());
        let cache = Arc::new(TokenCache::new(source.clone()));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.get(&request("us-east-1"), |_| false).await })
            })
            .collect();
        let mut called = 0;
        for c in calls {
            let o = c.await.unwrap();
            called += u32::from(o.called);
            assert_eq!(o.result.unwrap().token.password.expose_secret(), "token-1");
        }
        assert_eq!((called, source.calls.load(Ordering::SeqCst)), (1, 1));

        // Accepted: no call. Refused: a new call.
        let o = cache.get(&request("us-east-1"), |_| true).await;
        assert!(!o.called);
        let o = cache.get(&request("us-east-1"), |_| false).await;
        assert!(o.called);
        assert_eq!(o.result.unwrap().token.password.expose_secret(), "token-2");
        // Another region is another key.
        let o = cache.get(&request("eu-west-1"), |_| true).await;
        assert!(o.called);
    }

    #[tokio::test]
    async fn a_failure_is_shared_with_the_callers_that_waited_for_it() {
        let source = Arc::new(Counting::default());
        source.fail.store(true, Ordering::SeqCst);
        let cache = Arc::new(TokenCache::new(source.clone()));
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.get(&request("us-east-1"), |_| true).await })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap().result.is_err());
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        // A caller arriving after the failure asks again.
        assert!(cache.get(&request("us-east-1"), |_| true).await.called);
    }

    #[tokio::test]
    async fn keys_no_one_uses_are_dropped_unless_a_call_is_under_way() {
        let source = Arc::new(Counting::default());
        let cache = Arc::new(TokenCache::new(source.clone()));
        let _ = cache.get(&request("us-east-1"), |_| true).await;
        let _ = cache.get(&request("eu-west-1"), |_| true).await;
        // A call under way for a third key.
        let flying = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get(&request("ap-south-1"), |_| true).await })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while source.calls.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the third call never started");
            tokio::task::yield_now().await;
        }
        cache.retain_keys(|k| k.region == "us-east-1");
        assert_eq!(cache.len(), 2, "the key in use and the one in flight");
        assert!(flying.await.unwrap().result.is_ok());
        // The dropped key is asked again; the kept one is not.
        assert!(!cache.get(&request("us-east-1"), |_| true).await.called);
        assert!(cache.get(&request("eu-west-1"), |_| true).await.called);
    }

    #[tokio::test]
    async fn expired_tokens_are_evicted() {
        let cache = TokenCache::new(Arc::new(Counting::default()));
        let _ = cache.get(&request("us-east-1"), |_| true).await;
        cache.evict_expired(Timestamp::now());
        assert_eq!(cache.len(), 1);
        cache.evict_expired(Timestamp::now() + jiff::SignedDuration::from_hours(13));
        assert!(cache.is_empty());
    }
}
