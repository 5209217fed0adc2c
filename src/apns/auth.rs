//! APNs provider tokens: one ES256 JWT reused by every connection, renewed
//! before it is 60 minutes old and on `ExpiredProviderToken`. Apple refuses
//! tokens renewed more than about once per 20 minutes, so a refresh after a
//! rejection replaces only the token that was rejected.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Renew tokens this old; Apple rejects tokens older than an hour.
pub const RENEW_AFTER: Duration = Duration::from_secs(40 * 60);

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
    current: Mutex<Option<(HeaderValue, Instant)>>,
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
        })
    }

    /// The `authorization` header value (`bearer <jwt>`), signing a new token
    /// only when the cached one is older than [`RENEW_AFTER`].
    pub fn header(&self) -> Result<HeaderValue, AuthError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((value, issued)) = current.as_ref()
            && issued.elapsed() < RENEW_AFTER
        {
            return Ok(value.clone());
        }
        let value = self.sign()?;
        *current = Some((value.clone(), Instant::now()));
        Ok(value)
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

    fn sign(&self) -> Result<HeaderValue, AuthError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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
