//! OAuth2 access tokens for a Google service account: an RS256 JWT assertion
//! traded at the account's `token_uri` for a bearer token, cached until shortly
//! before it expires and shared by every request (the cache is
//! [`crate::oauth`]'s, written once with HMS's).
//!
//! Concurrent callers that find the cache stale wait on one refresh instead of
//! each asking Google (single flight), and a burst of `UNAUTHENTICATED` answers
//! for the same token causes one refresh: [`AccessToken::invalidate`] only drops
//! the token that was rejected. Neither the token nor the key is ever logged.
//!
//! With a shared backend (`redis`), [`AccessToken::share`] makes the cluster
//! use one access token per service account: a refresh first looks at the
//! cluster's, and only the gateway holding the mint lock asks Google.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::oauth::{self, Answer, Grantor, TokenCache, TokenError, truncate};

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
    /// The token endpoint could not be reached or answered without a usable
    /// token, or a refresh failed moments ago (not retried yet).
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl AuthError {
    /// True when the token endpoint itself said no: a configuration problem an
    /// operator must hear about, not a network blip.
    pub fn is_refusal(&self) -> bool {
        match self {
            AuthError::Refused { .. } | AuthError::Key(_) | AuthError::Sign(_) => true,
            AuthError::Token(e) => e.is_refusal(),
        }
    }
}

impl oauth::GrantError for AuthError {
    fn is_refusal(&self) -> bool {
        // The inherent method above, which callers use without this trait.
        AuthError::is_refusal(self)
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
struct GoogleRefusal {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// How Google grants a token: a JWT assertion signed with the service
/// account's key.
pub struct ServiceAccountGrant {
    client: reqwest::Client,
    token_uri: String,
    client_email: String,
    key_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceAccountGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountGrant")
            .field("token_uri", &self.token_uri)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

/// The cached access token of one service account.
pub type AccessToken = TokenCache<ServiceAccountGrant>;

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
        let grantor = ServiceAccountGrant {
            client,
            token_uri: account.token_uri.clone(),
            client_email: account.client_email.clone(),
            key_id: account.private_key_id.clone(),
            key,
        };
        // One token per service account in a cluster.
        let shared_key = format!("fcm:{}", account.client_email);
        Ok(TokenCache::over(grantor, shared_key, refreshes))
    }

    /// Signs the assertion: `iss` the account, `aud` the token endpoint, one hour.
    pub fn assertion(&self) -> Result<String, AuthError> {
        self.grantor().assertion()
    }
}

impl Grantor for ServiceAccountGrant {
    type Error = AuthError;

    const PLATFORM: &'static str = "FCM";

    async fn fetch(&self) -> Result<(HeaderValue, Duration), AuthError> {
        let assertion = self.assertion()?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", &assertion)
            .finish();
        match oauth::ask(&self.client, &self.token_uri, form).await? {
            // Not marked sensitive, so HPACK indexes it once per connection
            // rather than re-encoding it into every v1 request; it is never
            // logged.
            Answer::Granted { value, expires_in } => {
                let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME_S);
                Ok((value, Duration::from_secs(lifetime)))
            }
            Answer::Refused { status, body } => Err(AuthError::Refused {
                uri: self.token_uri.clone(),
                status,
                error: refusal_text(&body),
            }),
        }
    }
}

impl ServiceAccountGrant {
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
}

/// Google's refusal: `{"error":"invalid_grant","error_description":"…"}`.
fn refusal_text(body: &[u8]) -> String {
    match serde_json::from_slice(body) {
        Ok(GoogleRefusal {
            error: Some(error),
            error_description,
        }) => match error_description {
            Some(d) => format!("{error}: {}", truncate(&d, 300)),
            None => error,
        },
        _ => "no OAuth error in the answer".to_owned(),
    }
}
