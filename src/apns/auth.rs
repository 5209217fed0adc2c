//! APNs provider tokens: one ES256 JWT reused by every connection, renewed
//! before it is 60 minutes old and on `ExpiredProviderToken`. Apple refuses
//! tokens renewed more than about once per 20 minutes, so a refresh after a
//! rejection replaces only the token that was rejected.

//!
//! With a shared backend (`redis`), the gateways of a cluster use one token
//! per key: [`ProviderToken::share`] hands it a [`SharedCredentials`], and
//! [`ProviderToken::sync`] (every [`SYNC_EVERY`]) adopts the cluster's token
//! or, when it is due and this gateway wins the mint lock, signs and stores
//! the next one. Requests never wait on Redis: [`ProviderToken::header`]
//! answers from the local copy, and signs locally only when it has none
//! younger than [`USE_LIMIT`] (Redis away for long).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::shared_credential::{Clock, Credential, Decision, SharedCredentials, SystemClock};

/// Renew tokens this old; Apple rejects tokens older than an hour, and
/// renewals more often than every 20 minutes.
pub const RENEW_AFTER: Duration = Duration::from_secs(40 * 60);
/// With a shared token: the oldest local copy still used while the cluster's
/// renewal is pending (Apple's limit is 60 minutes).
pub const USE_LIMIT: Duration = Duration::from_secs(50 * 60);
/// Apple's limit: a token older than this is refused.
const MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// How often a gateway with a shared token looks at the cluster's.
pub const SYNC_EVERY: Duration = Duration::from_secs(10);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Errors making a provider token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key could not be used.
    #[error("apns.key_file is not a usable ES256 key: {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    /// Signing failed.
    #[error("signing the APNs provider token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

/// Signs and caches the provider token.
pub struct ProviderToken {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    /// The header and when it was minted (ms, by `clock`).
    current: Mutex<Option<(HeaderValue, u64)>>,
    clock: Arc<dyn Clock>,
    shared: OnceLock<SharedCredentials>,
}

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderToken")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ProviderToken {
    /// A signer for `key_pem` (PKCS#8, as in Apple's `.p8` files).
    pub fn new(key_pem: &[u8], key_id: &str, team_id: &str) -> Result<Self, AuthError> {
        Ok(Self {
            key: EncodingKey::from_ec_pem(key_pem).map_err(AuthError::Key)?,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            current: Mutex::new(None),
            clock: Arc::new(SystemClock),
            shared: OnceLock::new(),
        })
    }

    /// The same signer reading `clock` (tests run an hour in a moment).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses the cluster's token from now on (once; later calls are ignored).
    /// Call [`ProviderToken::sync`] next, then every [`SYNC_EVERY`].
    pub fn share(&self, shared: SharedCredentials) {
        let _ = self.shared.set(shared);
    }

    /// The cluster-wide key of this signer's token: one per team and key id.
    pub fn credential_key(&self) -> String {
        format!("apns:{}:{}", self.team_id, self.key_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(HeaderValue, u64)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `authorization` header value (`bearer <jwt>`), signing a new token
    /// only when the cached one is older than [`RENEW_AFTER`] (with a shared
    /// token: [`USE_LIMIT`], the cluster renews it before).
    pub fn header(&self) -> Result<HeaderValue, AuthError> {
        let now = self.clock.now_ms();
        let limit = if self.shared.get().is_some() {
            USE_LIMIT
        } else {
            RENEW_AFTER
        };
        let mut current = self.lock();
        if let Some((value, minted)) = current.as_ref()
            && now.saturating_sub(*minted) < ms(limit)
        {
            return Ok(value.clone());
        }
        if self.shared.get().is_some() {
            tracing::warn!(
                key = %self.credential_key(),
                "no shared APNs provider token from the cluster in time; signing one locally"
            );
        }
        let value = self.sign(now)?;
        *current = Some((value.clone(), now));
        Ok(value)
    }

    /// With a shared token: adopts the cluster's, or mints and stores the
    /// next one when it is due and this gateway holds the mint lock. Without
    /// one, or when Redis cannot be asked, does nothing (the local copy
    /// serves until [`USE_LIMIT`]).
    pub async fn sync(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let key = self.credential_key();
        let ours = self.lock().as_ref().and_then(|(value, minted)| {
            Some(Credential {
                value: value.to_str().ok()?.to_owned(),
                minted_at_ms: *minted,
                renew_at_ms: minted.saturating_add(ms(RENEW_AFTER)),
                expires_at_ms: minted.saturating_add(ms(MAX_AGE)),
            })
        });
        match shared.decide(&key, ours.as_ref()).await {
            Ok(Decision::Use(c)) => {
                if ours.as_ref().map(|o| o.minted_at_ms) != Some(c.minted_at_ms)
                    && let Ok(value) = HeaderValue::from_str(&c.value)
                {
                    *self.lock() = Some((value, c.minted_at_ms));
                }
            }
            Ok(Decision::Mint) => {
                let now = shared.now_ms();
                let value = match self.sign(now) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot sign APNs provider token");
                        return;
                    }
                };
                let Ok(text) = value.to_str().map(str::to_owned) else {
                    return;
                };
                *self.lock() = Some((value, now));
                let minted = Credential {
                    value: text,
                    minted_at_ms: now,
                    renew_at_ms: now.saturating_add(ms(RENEW_AFTER)),
                    expires_at_ms: now.saturating_add(ms(MAX_AGE)),
                };
                if let Err(e) = shared.publish(&key, &minted).await {
                    tracing::warn!(error = %e, "cannot store the shared APNs provider token");
                } else {
                    tracing::info!(%key, "minted the cluster's APNs provider token");
                }
            }
            Ok(Decision::Wait) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the shared APNs provider token"),
        }
    }

    /// Drops `rejected` so the next [`ProviderToken::header`] signs a new one.
    /// A token already replaced by another connection is left alone, so a burst
    /// of rejections causes one renewal, not one per stream.
    pub fn invalidate(&self, rejected: &HeaderValue) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(value, _)| value == rejected) {
            *current = None;
        }
    }

    fn sign(&self, now_ms: u64) -> Result<HeaderValue, AuthError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = now_ms / 1000;
        let jwt = jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat,
            },
            &self.key,
        )
        .map_err(AuthError::Sign)?;
        // Deliberately not marked sensitive: HPACK then indexes it once per
        // connection instead of Huffman-encoding ~250 bytes into every request
        // (measured: the largest HPACK cost). It is never logged; tests/secrets.rs
        // checks that with every crate at trace level.
        HeaderValue::from_str(&format!("bearer {jwt}"))
            .map_err(|_| AuthError::Sign(jsonwebtoken::errors::ErrorKind::InvalidToken.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_reused_until_invalidated() {
        let (p8, public) = crate::mock::apns::generate_provider_key().expect("key");
        let signer = ProviderToken::new(p8.as_bytes(), "ABCDEFGHIJ", "TEAM123456").expect("signer");
        let first = signer.header().expect("sign");
        assert_eq!(signer.header().expect("cached"), first);

        let jwt = first.to_str().expect("ascii").trim_start_matches("bearer ");
        let header = jsonwebtoken::decode_header(jwt).expect("header");
        assert_eq!(header.kid.as_deref(), Some("ABCDEFGHIJ"));
        assert_eq!(header.alg, Algorithm::ES256);
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let key = jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).expect("public key");
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation).expect("verifies");
        assert_eq!(claims.claims["iss"], "TEAM123456");
        assert!(claims.claims["iat"].as_u64().is_some());

        // Invalidating a token that was already replaced does nothing.
        signer.invalidate(&HeaderValue::from_static("bearer other"));
        assert_eq!(signer.header().expect("cached"), first);
        signer.invalidate(&first);
        let _ = signer.header().expect("re-signed");
        assert!(signer.current.lock().expect("lock").is_some());
    }
}
