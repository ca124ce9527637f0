//! A scripted token source: a new token per call, an expiry chosen by the test, and a
//! switch to make it fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use ecr_token_refresh::ecr::{
    AuthorizationToken, EcrError, FailureKind, TokenRequest, TokenSource,
};
use jiff::{SignedDuration, Timestamp};
use secrecy::SecretString;

pub struct ScriptedTokens {
    /// Every call, failed or not.
    pub attempts: AtomicU32,
    /// Successful calls.
    pub calls: AtomicU32,
    pub failing: AtomicBool,
    pub lifetime: Mutex<SignedDuration>,
    /// How calls fail while failing (default: network).
    pub kind: Mutex<FailureKind>,
    /// Fail only for these regions (empty: every region).
    pub regions: Mutex<Vec<String>>,
    /// The error message while failing.
    pub message: Mutex<String>,
    /// Every successful call: what was asked and the password handed out.
    pub issued: Mutex<Vec<(TokenRequest, String)>>,
    /// Lifetimes of tokens for some regions (others: `lifetime`).
    pub region_lifetimes: Mutex<std::collections::BTreeMap<String, SignedDuration>>,
    /// How long each call takes (default: no wait), so that callers overlap.
    pub delay: Mutex<std::time::Duration>,
}

impl Default for ScriptedTokens {
    fn default() -> Self {
        Self {
            attempts: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            lifetime: Mutex::new(SignedDuration::from_hours(12)),
            kind: Mutex::new(FailureKind::Network),
            regions: Mutex::new(Vec::new()),
            message: Mutex::new("connection refused (scripted)".into()),
            issued: Mutex::new(Vec::new()),
            region_lifetimes: Mutex::new(Default::default()),
            delay: Mutex::new(std::time::Duration::ZERO),
        }
    }
}

impl ScriptedTokens {
    /// Tokens that expire `secs` seconds after they are handed out.
    pub fn with_lifetime(secs: i64) -> Self {
        Self {
            lifetime: Mutex::new(SignedDuration::from_secs(secs)),
            ..Self::default()
        }
    }
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
    /// Fails every call for `region` with `kind` from now on.
    pub fn fail_in(&self, region: &str, kind: FailureKind) {
        *self.kind.lock().unwrap() = kind;
        self.regions.lock().unwrap().push(region.to_string());
        self.fail(true);
    }
    /// The password handed out by call `n` (1-based).
    pub fn password(n: u32) -> String {
        format!("secret-password-{n}:with-colon")
    }
}

#[async_trait]
impl TokenSource for ScriptedTokens {
    async fn authorization_token(
        &self,
        request: &TokenRequest,
    ) -> Result<AuthorizationToken, EcrError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let regions = self.regions.lock().unwrap().clone();
        if self.failing.load(Ordering::SeqCst)
            && (regions.is_empty() || regions.contains(&request.region))
        {
            return Err(EcrError {
                kind: *self.kind.lock().unwrap(),
                registry_id: request.registry_id.clone(),
                region: request.region.clone(),
                message: self.message.lock().unwrap().clone(),
            });
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let lifetime = self
            .region_lifetimes
            .lock()
            .unwrap()
            .get(&request.region)
            .copied()
            .unwrap_or(*self.lifetime.lock().unwrap());
        self.issued
            .lock()
            .unwrap()
            .push((request.clone(), Self::password(n)));
        Ok(AuthorizationToken {
            username: "AWS".into(),
            password: SecretString::from(Self::password(n)),
            expires_at: Timestamp::now() + lifetime,
            proxy_endpoint: None,
        })
    }
}
