//! OAuth2 access tokens for a Google service account: an RS256 JWT assertion
//! traded at the account's `token_uri` for a bearer token, cached until shortly
//! before it expires and shared by every request.
//!
//! Concurrent callers that find the cache stale wait on one refresh instead of
//! each asking Google (single flight), and a burst of `UNAUTHENTICATED` answers
//! for the same token causes one refresh: [`AccessToken::invalidate`] only drops
//! the token that was rejected. Neither the token nor the key is ever logged.
//!
//! With a shared backend (`redis`), [`AccessToken::share`] makes the cluster
//! use one access token per service account: a refresh first looks at the
//! cluster's, and only the gateway holding the mint lock asks Google.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::shared_credential::{
    Clock, Credential, Decision, LOCK_HOLD, SharedCredentials, SystemClock,
};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use super::config::ServiceAccount;

/// The scope FCM v1 needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of a JWT assertion.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Assertion lifetime; Google refuses more than an hour.
const ASSERTION_LIFETIME_S: u64 = 3600;
/// Renew this long before `expires_in` at most.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(300);
/// After a failed refresh, callers within this window get the same error
/// rather than hammering a token endpoint that just failed.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// `expires_in` assumed when the answer leaves it out (Google's is 3600).
const DEFAULT_LIFETIME_S: u64 = 3600;

/// Errors obtaining an access token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The service account's key could not be used.
    #[error("the service account's private_key is not a usable RSA key: {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    /// Signing the assertion failed.
    #[error("signing the OAuth assertion: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token endpoint could not be reached or did not answer in time.
    #[error("cannot reach the token endpoint {uri}: {source}")]
    Transport {
        /// `token_uri`.
        uri: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint refused the assertion (wrong key, clock skew, revoked account).
    #[error("the token endpoint {uri} refused the assertion: HTTP {status}: {error}")]
    Refused {
        /// `token_uri`.
        uri: String,
        /// The HTTP status.
        status: u16,
        /// Google's `error` and `error_description` (they never echo secrets).
        error: String,
    },
    /// The token endpoint answered 200 without a usable token.
    #[error("the token endpoint {uri} answered without a usable access token")]
    BadAnswer {
        /// `token_uri`.
        uri: String,
    },
    /// A refresh failed moments ago; not retried yet.
    #[error("access token unavailable (last refresh failed: {message})")]
    Held {
        /// The failure's text.
        message: String,
        /// Whether that failure was a refusal (see [`AuthError::is_refusal`]).
        refusal: bool,
    },
}

impl AuthError {
    /// True when the token endpoint itself said no: a configuration problem an
    /// operator must hear about, not a network blip.
    pub fn is_refusal(&self) -> bool {
        match self {
            AuthError::Refused { .. } | AuthError::Key(_) | AuthError::Sign(_) => true,
            AuthError::Held { refusal, .. } => *refusal,
            AuthError::Transport { .. } | AuthError::BadAnswer { .. } => false,
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct Grant {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct GrantError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Default)]
struct Cache {
    /// The bearer header, when it was granted, when to renew it and when it
    /// expires (ms, by the token's clock).
    current: Option<Held>,
    /// The last refresh failure: when, its text, and whether it was a refusal.
    failure: Option<(Instant, String, bool)>,
}

struct Held {
    value: HeaderValue,
    granted_at_ms: u64,
    renew_at_ms: u64,
    expires_at_ms: u64,
}

impl Held {
    /// The held token as the cluster's shared store keeps it.
    fn credential(&self) -> Option<Credential> {
        Some(Credential {
            value: self.value.to_str().ok()?.to_owned(),
            minted_at_ms: self.granted_at_ms,
            renew_at_ms: self.renew_at_ms,
            expires_at_ms: self.expires_at_ms,
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The cached access token of one service account.
pub struct AccessToken {
    client: reqwest::Client,
    token_uri: String,
    client_email: String,
    key_id: String,
    key: EncodingKey,
    cache: Mutex<Cache>,
    /// Held while one caller refreshes; the others wait, then reuse its result.
    refresh: tokio::sync::Mutex<()>,
    refreshes: IntCounter,
    obtained: AtomicBool,
    clock: Arc<dyn Clock>,
    shared: OnceLock<SharedCredentials>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token_uri", &self.token_uri)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// A token source for `account`, fetching through `client`; every grant
    /// obtained counts on `refreshes`.
    pub fn new(
        account: &ServiceAccount,
        client: reqwest::Client,
        refreshes: IntCounter,
    ) -> Result<Self, AuthError> {
        let key = EncodingKey::from_rsa_pem(account.private_key.expose().as_bytes())
            .map_err(AuthError::Key)?;
        Ok(Self {
            client,
            token_uri: account.token_uri.clone(),
            client_email: account.client_email.clone(),
            key_id: account.private_key_id.clone(),
            key,
            cache: Mutex::new(Cache::default()),
            refresh: tokio::sync::Mutex::new(()),
            refreshes,
            obtained: AtomicBool::new(false),
            clock: Arc::new(SystemClock),
            shared: OnceLock::new(),
        })
    }

    /// The same token source reading `clock` for the token's age (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses the cluster's access token from now on (once; later calls are
    /// ignored).
    pub fn share(&self, shared: SharedCredentials) {
        let _ = self.shared.set(shared);
    }

    /// The cluster-wide key of this account's token.
    pub fn credential_key(&self) -> String {
        format!("fcm:{}", self.client_email)
    }

    /// True once any access token was granted: the credentials work.
    pub fn obtained(&self) -> bool {
        self.obtained.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache is two plain fields, consistent at every panic point.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let now = self.clock.now_ms();
        let cache = self.lock();
        match &cache.current {
            Some(held) if now < held.renew_at_ms => Some(held.value.clone()),
            _ => None,
        }
    }

    /// The held token while it has not expired (due for renewal or not).
    fn usable(&self) -> Option<HeaderValue> {
        let now = self.clock.now_ms();
        let cache = self.lock();
        match &cache.current {
            Some(held) if now < held.expires_at_ms => Some(held.value.clone()),
            _ => None,
        }
    }

    fn adopt(&self, c: &Credential) -> Option<HeaderValue> {
        let value = HeaderValue::from_str(&c.value).ok()?;
        let mut cache = self.lock();
        cache.current = Some(Held {
            value: value.clone(),
            granted_at_ms: c.minted_at_ms,
            renew_at_ms: c.renew_at_ms,
            expires_at_ms: c.expires_at_ms,
        });
        cache.failure = None;
        self.obtained.store(true, Ordering::Relaxed);
        Some(value)
    }

    /// With a shared token: the cluster's, or the one we mint under its lock.
    /// `None`: ask Google ourselves (no shared store, or it cannot be used).
    async fn via_cluster(&self) -> Option<Result<HeaderValue, AuthError>> {
        let shared = self.shared.get()?;
        let key = self.credential_key();
        let waited = Instant::now();
        loop {
            let ours = self.lock().current.as_ref().and_then(Held::credential);
            match shared.decide(&key, ours.as_ref()).await {
                Ok(Decision::Use(c)) => return self.adopt(&c).map(Ok),
                Ok(Decision::Mint) => {
                    let result = self.grant().await;
                    if result.is_ok() {
                        let held = self.lock().current.as_ref().and_then(Held::credential);
                        if let Some(held) = held
                            && let Err(e) = shared.publish(&key, &held).await
                        {
                            tracing::warn!(error = %e, "cannot store the shared FCM access token");
                        }
                    }
                    return Some(result);
                }
                Ok(Decision::Wait) => {
                    // Another gateway is asking Google. The token we hold
                    // still works (renewal starts minutes before expiry).
                    if let Some(value) = self.usable() {
                        return Some(Ok(value));
                    }
                    if waited.elapsed() > LOCK_HOLD {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the shared FCM access token");
                    return None;
                }
            }
        }
    }

    /// The `authorization` header value (`Bearer <token>`), refreshing first
    /// when the cached token is stale or was invalidated.
    pub async fn header(&self) -> Result<HeaderValue, AuthError> {
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let _refreshing = self.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        if let Some((at, message, refusal)) = &self.lock().failure
            && at.elapsed() < FAILURE_HOLD
        {
            return Err(AuthError::Held {
                message: message.clone(),
                refusal: *refusal,
            });
        }
        if let Some(result) = self.via_cluster().await {
            return result;
        }
        self.grant().await
    }

    /// Asks the token endpoint and caches the answer.
    async fn grant(&self) -> Result<HeaderValue, AuthError> {
        let asked_at = self.clock.now_ms();
        match self.fetch().await {
            Ok((value, lifetime)) => {
                // Renew 5 minutes early, or 10% of the lifetime for short-lived
                // tokens, counted from when we asked so a slow answer errs early.
                let margin = MAX_RENEW_MARGIN.min(lifetime / 10);
                let mut cache = self.lock();
                cache.current = Some(Held {
                    value: value.clone(),
                    granted_at_ms: asked_at,
                    renew_at_ms: asked_at.saturating_add(ms(lifetime - margin)),
                    expires_at_ms: asked_at.saturating_add(ms(lifetime)),
                });
                cache.failure = None;
                self.obtained.store(true, Ordering::Relaxed);
                self.refreshes.inc();
                Ok(value)
            }
            Err(e) => {
                self.lock().failure = Some((Instant::now(), e.to_string(), e.is_refusal()));
                Err(e)
            }
        }
    }

    /// Drops `rejected` so the next [`AccessToken::header`] refreshes. A token
    /// already replaced is left alone, so a burst of rejections causes one refresh.
    pub fn invalidate(&self, rejected: &HeaderValue) {
        let mut cache = self.lock();
        if cache
            .current
            .as_ref()
            .is_some_and(|held| held.value == *rejected)
        {
            cache.current = None;
        }
    }

    /// Signs the assertion: `iss` the account, `aud` the token endpoint, one hour.
    pub fn assertion(&self) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        if !self.key_id.is_empty() {
            header.kid = Some(self.key_id.clone());
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat,
                exp: iat + ASSERTION_LIFETIME_S,
            },
            &self.key,
        )
        .map_err(AuthError::Sign)
    }

    async fn fetch(&self) -> Result<(HeaderValue, Duration), AuthError> {
        let assertion = self.assertion()?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", &assertion)
            .finish();
        let transport = |source| AuthError::Transport {
            uri: self.token_uri.clone(),
            source,
        };
        let response = self
            .client
            .post(&self.token_uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if status != 200 {
            let parsed: Option<GrantError> = serde_json::from_slice(&body).ok();
            let error = match parsed {
                Some(GrantError {
                    error: Some(error),
                    error_description,
                }) => match error_description {
                    Some(d) => format!("{error}: {}", truncate(&d, 300)),
                    None => error,
                },
                _ => "no OAuth error in the answer".to_owned(),
            };
            return Err(AuthError::Refused {
                uri: self.token_uri.clone(),
                status,
                error,
            });
        }
        let bad = || AuthError::BadAnswer {
            uri: self.token_uri.clone(),
        };
        let grant: Grant = serde_json::from_slice(&body).map_err(|_| bad())?;
        let token = grant
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(bad)?;
        // Not marked sensitive, so HPACK indexes it once per connection rather
        // than re-encoding it into every v1 request; it is never logged.
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad())?;
        let lifetime = Duration::from_secs(grant.expires_in.unwrap_or(DEFAULT_LIFETIME_S));
        Ok((value, lifetime))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
