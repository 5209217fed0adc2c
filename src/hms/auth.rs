//! The app-level access token of Huawei's OAuth 2.0 client credentials
//! grant: `grant_type=client_credentials&client_id=<app id>&client_secret=<secret>`,
//! form-encoded (a secret holds `+`, `/` and `=`, which a form must escape),
//! traded at `token_uri` for `{"access_token","expires_in"}`. The token is
//! cached until shortly before it expires and shared by every request.
//!
//! Concurrent callers that find the cache stale wait on one refresh (single
//! flight), and a burst of 401 answers for the same token causes one refresh:
//! [`AccessToken::invalidate`] only drops the token that was rejected. Neither
//! the token nor the secret is ever logged.
//!
//! With a shared backend (`redis`), [`AccessToken::share`] makes the cluster
//! use one access token per app id: a refresh first looks at the cluster's,
//! and only the gateway holding the mint lock asks Huawei.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus::IntCounter;
use serde::Deserialize;

use crate::settings::Secret;
use crate::shared_credential::{
    Clock, Credential, Decision, LOCK_HOLD, SharedCredentials, SystemClock,
};

/// The grant Push Kit's server API uses.
pub const GRANT_TYPE: &str = "client_credentials";
/// Renew this long before `expires_in` at most.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(300);
/// After a failed refresh, callers within this window get the same error
/// rather than hammering a token endpoint that just failed.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// `expires_in` assumed when the answer leaves it out (Huawei's is 3600).
const DEFAULT_LIFETIME_S: u64 = 3600;

/// Errors obtaining an access token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint could not be reached or did not answer in time.
    #[error("cannot reach the token endpoint {uri}: {source}")]
    Transport {
        /// `token_uri`.
        uri: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint refused the credentials (wrong app id or secret).
    #[error("the token endpoint {uri} refused the credentials: HTTP {status}: {error}")]
    Refused {
        /// `token_uri`.
        uri: String,
        /// The HTTP status.
        status: u16,
        /// Huawei's `error`, `sub_error` and `error_description` (they never
        /// echo the secret).
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
    /// operator must hear about, not a network blip. A 5xx from the token
    /// endpoint is its trouble, not ours.
    pub fn is_refusal(&self) -> bool {
        match self {
            AuthError::Refused { status, .. } => !(500..=599).contains(status),
            AuthError::Held { refusal, .. } => *refusal,
            AuthError::Transport { .. } | AuthError::BadAnswer { .. } => false,
        }
    }
}

/// The form body of the grant, every value form-encoded.
pub fn grant_form(app_id: &str, secret: &Secret) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", GRANT_TYPE)
        .append_pair("client_id", app_id)
        .append_pair("client_secret", secret.expose())
        .finish()
}

#[derive(Deserialize)]
struct Grant {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Huawei's refusal: `{"error":1101,"sub_error":20172,"error_description":"…"}`
/// (numbers; a string is read too).
fn refusal_text(body: &[u8]) -> String {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice(body) else {
        return "no OAuth error in the answer".to_owned();
    };
    let word = |key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut text = match (word("error"), word("sub_error")) {
        (Some(e), Some(s)) => format!("error {e}, sub_error {s}"),
        (Some(e), None) => format!("error {e}"),
        (None, _) => "no OAuth error in the answer".to_owned(),
    };
    if let Some(d) = word("error_description") {
        text.push_str(": ");
        text.push_str(truncate(&d, 300));
    }
    text
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Default)]
struct Cache {
    current: Option<Held>,
    /// The last refresh failure: when, its text, and whether it was a refusal.
    failure: Option<(Instant, String, bool)>,
}

/// The bearer header, when it was granted, when to renew it and when it
/// expires (ms, by the token's clock).
struct Held {
    value: HeaderValue,
    granted_at_ms: u64,
    renew_at_ms: u64,
    expires_at_ms: u64,
}

impl Held {
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

/// The cached access token of one app.
pub struct AccessToken {
    client: reqwest::Client,
    token_uri: String,
    app_id: String,
    secret: Secret,
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
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// A token source for `app_id`, asking `token_uri` through `client`;
    /// every grant obtained counts on `refreshes`.
    pub fn new(
        app_id: &str,
        secret: Secret,
        token_uri: &str,
        client: reqwest::Client,
        refreshes: IntCounter,
    ) -> Self {
        Self {
            client,
            token_uri: token_uri.to_owned(),
            app_id: app_id.to_owned(),
            secret,
            cache: Mutex::new(Cache::default()),
            refresh: tokio::sync::Mutex::new(()),
            refreshes,
            obtained: AtomicBool::new(false),
            clock: Arc::new(SystemClock),
            shared: OnceLock::new(),
        }
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

    /// The cluster-wide key of this app's token.
    pub fn credential_key(&self) -> String {
        format!("hms:{}", self.app_id)
    }

    /// True once any access token was granted: the credentials work.
    pub fn obtained(&self) -> bool {
        self.obtained.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        crate::floor::lock(&self.cache)
    }

    /// The held token while it is not due for renewal.
    fn fresh(&self) -> Option<HeaderValue> {
        let now = self.clock.now_ms();
        match &self.lock().current {
            Some(held) if now < held.renew_at_ms => Some(held.value.clone()),
            _ => None,
        }
    }

    /// The held token while it has not expired (due for renewal or not).
    fn usable(&self) -> Option<HeaderValue> {
        let now = self.clock.now_ms();
        match &self.lock().current {
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

    /// The `authorization` header value (`Bearer <token>`), refreshing first
    /// when the cached token is due or was invalidated.
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

    /// With a shared token: the cluster's, or the one we mint under its lock.
    /// `None`: ask Huawei ourselves (no shared store, or it cannot be used).
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
                            tracing::warn!(error = %e, "cannot store the shared HMS access token");
                        }
                    }
                    return Some(result);
                }
                Ok(Decision::Wait) => {
                    // Another gateway is asking Huawei; the token we hold
                    // still works (renewal starts well before expiry).
                    if let Some(value) = self.usable() {
                        return Some(Ok(value));
                    }
                    if waited.elapsed() > LOCK_HOLD {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the shared HMS access token");
                    return None;
                }
            }
        }
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
    /// already replaced is left alone, so a burst of rejections causes one
    /// refresh.
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

    async fn fetch(&self) -> Result<(HeaderValue, Duration), AuthError> {
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
            .body(grant_form(&self.app_id, &self.secret))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if status != 200 {
            return Err(AuthError::Refused {
                uri: self.token_uri.clone(),
                status,
                error: refusal_text(&body),
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
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad())?;
        value.set_sensitive(true);
        let lifetime = Duration::from_secs(grant.expires_in.unwrap_or(DEFAULT_LIFETIME_S).max(1));
        Ok((value, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_form_encodes_the_secret() {
        let form = grant_form("104000000", &Secret::new("ab+c/d=e&f g"));
        assert_eq!(
            form,
            "grant_type=client_credentials&client_id=104000000&client_secret=ab%2Bc%2Fd%3De%26f+g"
        );
        // Decoded by any form reader, the secret comes back whole.
        let secret = form_urlencoded::parse(form.as_bytes())
            .find(|(k, _)| k == "client_secret")
            .map(|(_, v)| v.into_owned());
        assert_eq!(secret.as_deref(), Some("ab+c/d=e&f g"));
    }

    #[test]
    fn huawei_refusals_name_error_and_sub_error_and_5xx_is_no_refusal() {
        let text = refusal_text(
            br#"{"error":1101,"sub_error":20172,"error_description":"invalid client_secret format"}"#,
        );
        assert_eq!(
            text,
            "error 1101, sub_error 20172: invalid client_secret format"
        );
        assert_eq!(refusal_text(b"<html>"), "no OAuth error in the answer");
        let refused = |status| AuthError::Refused {
            uri: "u".into(),
            status,
            error: String::new(),
        };
        assert!(refused(400).is_refusal());
        assert!(!refused(503).is_refusal());
    }
}
