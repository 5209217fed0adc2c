//! VAPID (RFC 8292): the application server's identity towards push services.
//!
//! One EC P-256 key (PEM, PKCS#8 or SEC1) signs an ES256 JWT per push-service
//! origin (`aud`), valid 12 hours (`exp`, RFC 8292 allows at most 24) and
//! naming the operator (`sub`). The token is cached per origin and renewed an
//! hour before it expires, so a send never waits on a signature it already has.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use http::HeaderValue;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::ece::b64_encode;

/// How long a JWT is valid (RFC 8292 §2: no more than 24 hours; Apple's
/// push service refuses an `exp` more than a day ahead with `BadJwtToken`).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

// The rule above, held at build time: no setting changes the lifetime.
const _: () = assert!(TOKEN_LIFETIME.as_secs() <= 24 * 3600);

/// Apple's push service (`web.push.apple.com`).
pub const APPLE_PUSH_ORIGIN: &str = "https://web.push.apple.com";
/// A cached JWT is replaced once it has less than this left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// Why the VAPID key or subject is unusable (refused at start).
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    /// The file holds no PEM private key.
    #[error(
        "no PEM private key found ({0}); expected \"BEGIN PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\""
    )]
    Pem(rustls::pki_types::pem::Error),
    /// The key is RSA, or EC on another curve, or malformed.
    #[error(
        "the key is not an EC P-256 private key; create one with `openssl ecparam -name prime256v1 -genkey -noout -out vapid.pem`"
    )]
    NotP256,
    /// The subject is neither `mailto:` nor `https:`.
    #[error("subject {0:?} must start with \"mailto:\" or \"https://\" (RFC 8292 §2.1)")]
    Subject(String),
}

/// The VAPID key pair.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    public_b64: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_b64)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// Loads a P-256 private key from PEM (PKCS#8 `PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`, as `openssl ecparam -genkey` writes it, parameters
    /// block and all). Any other key type or curve is refused.
    pub fn from_pem(pem: &[u8]) -> Result<Self, VapidError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(VapidError::Pem)?;
        let der = match &der {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
            PrivateKeyDer::Sec1(k) => k.secret_sec1_der(),
            _ => return Err(VapidError::NotP256),
        };
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| VapidError::NotP256)?;
        Ok(Self::from_pair(pair))
    }

    /// A fresh random key (demo, mock, tests).
    pub fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Self::from_pair(EcdsaKeyPair::generate(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
        )?))
    }

    /// The private key as PKCS#8 PEM (for writing the demo's key file).
    pub fn to_pkcs8_pem(&self) -> Result<String, aws_lc_rs::error::Unspecified> {
        use base64::Engine;
        let der = self.pair.to_pkcs8v1()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    fn from_pair(pair: EcdsaKeyPair) -> Self {
        let public_b64 = b64_encode(pair.public_key().as_ref());
        Self { pair, public_b64 }
    }

    /// The public key as base64url of the uncompressed point: what the site's
    /// JavaScript passes as `applicationServerKey`, and the `k=` parameter.
    pub fn public_key_b64(&self) -> &str {
        &self.public_b64
    }

    /// Signs `claims` as a compact ES256 JWS.
    fn sign_jwt(
        &self,
        claims: &serde_json::Value,
    ) -> Result<String, aws_lc_rs::error::Unspecified> {
        let mut jwt = b64_encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        jwt.push('.');
        jwt.push_str(&b64_encode(claims.to_string().as_bytes()));
        let sig = self.pair.sign(&SystemRandom::new(), jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&b64_encode(sig.as_ref()));
        Ok(jwt)
    }
}

/// Checks a VAPID subject: `mailto:<address>` or `https://<host>…`.
pub fn check_subject(subject: &str) -> Result<(), VapidError> {
    let ok = subject
        .strip_prefix("mailto:")
        .is_some_and(|rest| rest.contains('@') && !rest.contains(char::is_whitespace))
        || subject
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if ok {
        Ok(())
    } else {
        Err(VapidError::Subject(subject.to_owned()))
    }
}

/// The subject's host when Apple's push service would refuse the JWT for
/// it: Apple answers `403 BadJwtToken` when `sub` names a host that cannot
/// be reached (`mailto:ops@localhost`, `mailto:x@host.invalid`, a `.local`
/// name), where other push services accept it. Names under the special-use
/// domains of RFC 6761 and RFC 6762 never resolve publicly.
pub fn apple_refuses_subject(subject: &str) -> Option<String> {
    let host = if let Some(rest) = subject.strip_prefix("mailto:") {
        rest.rsplit_once('@').map(|(_, h)| h)?.to_owned()
    } else {
        url::Url::parse(subject).ok()?.host_str()?.to_owned()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let last = host.rsplit('.').next().unwrap_or_default();
    let unreachable = !host.contains('.')
        || matches!(
            last,
            "localhost" | "local" | "invalid" | "test" | "example" | "internal"
        );
    unreachable.then_some(host)
}

struct Cached {
    header: HeaderValue,
    renew_at: u64,
}

/// Signs and caches `Authorization: vapid t=…, k=…` per push-service origin.
pub struct Vapid {
    key: VapidKey,
    subject: String,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("key", &self.key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Vapid {
    /// A signer for `key` naming `subject` (checked).
    pub fn new(key: VapidKey, subject: &str) -> Result<Self, VapidError> {
        check_subject(subject)?;
        Ok(Self {
            key,
            subject: subject.to_owned(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The key.
    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// The `Authorization` value for a request to `origin`
    /// (`https://host[:port]`), from the cache while it has an hour left.
    pub fn authorization(
        &self,
        origin: &str,
    ) -> Result<HeaderValue, aws_lc_rs::error::Unspecified> {
        self.authorization_at(origin, now_s())
    }

    /// [`Vapid::authorization`] at `now` (seconds since the epoch).
    pub fn authorization_at(
        &self,
        origin: &str,
        now: u64,
    ) -> Result<HeaderValue, aws_lc_rs::error::Unspecified> {
        if let Ok(cache) = self.cache.lock()
            && let Some(c) = cache.get(origin)
            && now < c.renew_at
        {
            return Ok(c.header.clone());
        }
        // Signed outside the lock: two tasks may both sign once, harmlessly.
        let exp = now + TOKEN_LIFETIME.as_secs();
        let jwt = self.key.sign_jwt(&serde_json::json!({
            "aud": origin,
            "exp": exp,
            "sub": self.subject,
        }))?;
        let header = HeaderValue::try_from(format!("vapid t={jwt}, k={}", self.key.public_b64))
            .map_err(|_| aws_lc_rs::error::Unspecified)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                origin.to_owned(),
                Cached {
                    header: header.clone(),
                    renew_at: exp - RENEW_BEFORE.as_secs(),
                },
            );
        }
        Ok(header)
    }

    /// Forgets the cached token for `origin` (after a 401/403 about it).
    pub fn forget(&self, origin: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(origin);
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webpush::ece::b64_decode;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    /// `openssl ecparam -name prime256v1 -genkey` output: parameters, then SEC1.
    const SEC1_PEM: &str = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIMn8zafNR0UI1q6Jj7vVjWVdDwGrkCZyMLsT9QCYivtIoAoGCCqGSM49
AwEHoUQDQgAEQnQAsdrWDsfamDK5q+GggOl+Q2bwaPBc0IIZTUfxklT5DtxArBn+
5g0hgbq00nZlMh9zJ8JzuEHtlTtsribxHw==
-----END EC PRIVATE KEY-----
";

    /// A P-384 key (`openssl ecparam -name secp384r1 -genkey -noout`).
    const P384_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDAzLwKQrJbPHBwXaiqrQmpJrAumalziSrY0EI5WG/7/m96cfAx3LIGx
J4ssKaZvfBCgBwYFK4EEACKhZANiAATRq1u4lMKbWLtPk4UPzNGEQP4TkuJJvTaU
zGteU6RicOFvddU9k3jgJeizSje46oUpwvGZBQO/lYXNpF/UAMhfIRc+sMJEdcjI
BBvWFy3/+ut3eaDAs7QBvgCIu1aYtOU=
-----END EC PRIVATE KEY-----
";

    fn claims_of(header: &HeaderValue) -> (serde_json::Value, String, String) {
        let s = header.to_str().expect("ascii");
        let rest = s.strip_prefix("vapid t=").expect("vapid scheme");
        let (jwt, k) = rest.split_once(", k=").expect("k parameter");
        let mut parts = jwt.split('.');
        let (h, c, sig) = (
            parts.next().expect("header"),
            parts.next().expect("claims"),
            parts.next().expect("signature"),
        );
        let header: serde_json::Value =
            serde_json::from_slice(&b64_decode(h).expect("b64")).expect("json");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        // The signature verifies with the advertised public key.
        let public = b64_decode(k).expect("b64");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(
                format!("{h}.{c}").as_bytes(),
                &b64_decode(sig).expect("b64"),
            )
            .expect("signature verifies");
        let claims = serde_json::from_slice(&b64_decode(c).expect("b64")).expect("json");
        (claims, k.to_owned(), jwt.to_owned())
    }

    #[test]
    fn apple_refuses_subjects_naming_unreachable_hosts() {
        for bad in [
            "mailto:ops@localhost",
            "mailto:ops@gateway.local",
            "mailto:security@app.invalid",
            "https://localhost/contact",
            "https://push.test",
            "mailto:ops@intranet",
        ] {
            assert!(apple_refuses_subject(bad).is_some(), "{bad}");
        }
        for good in [
            "mailto:ops@example.com",
            "https://example.org/contact",
            "mailto:a@b.co.uk",
        ] {
            assert_eq!(apple_refuses_subject(good), None, "{good}");
        }
    }

    #[test]
    fn claims_are_aud_origin_exp_within_24h_and_sub() {
        let vapid = Vapid::new(VapidKey::generate().expect("key"), "mailto:ops@example.com")
            .expect("subject ok");
        let now = 1_800_000_000;
        let h = vapid
            .authorization_at("https://fcm.googleapis.com", now)
            .expect("signs");
        let (claims, k, _) = claims_of(&h);
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}");
        assert_eq!(k, vapid.key().public_key_b64());
        assert_eq!(b64_decode(&k).expect("b64").len(), 65);
        assert_eq!(b64_decode(&k).expect("b64")[0], 4);
    }

    #[test]
    fn tokens_are_cached_per_origin_and_renewed_before_expiry() {
        let vapid = Vapid::new(
            VapidKey::generate().expect("key"),
            "https://example.com/ops",
        )
        .expect("ok");
        let now = 1_800_000_000;
        let a = vapid.authorization_at("https://a.example", now).expect("a");
        let a_later = vapid
            .authorization_at("https://a.example", now + 3600)
            .expect("a");
        assert_eq!(a, a_later, "reused within its life");
        let b = vapid.authorization_at("https://b.example", now).expect("b");
        assert_ne!(a, b, "one token per origin");
        assert_eq!(claims_of(&b).0["aud"], "https://b.example");
        // An hour before exp the token is replaced with a fresh one.
        let renew_at = now + TOKEN_LIFETIME.as_secs() - RENEW_BEFORE.as_secs();
        let renewed = vapid
            .authorization_at("https://a.example", renew_at)
            .expect("a");
        assert_ne!(a, renewed);
        assert_eq!(
            claims_of(&renewed).0["exp"].as_u64(),
            Some(renew_at + TOKEN_LIFETIME.as_secs())
        );
        vapid.forget("https://a.example");
        assert_ne!(
            renewed,
            vapid
                .authorization_at("https://a.example", renew_at)
                .expect("a")
        );
    }

    #[test]
    fn sec1_with_parameters_and_pkcs8_load_to_the_same_key() {
        let sec1 = VapidKey::from_pem(SEC1_PEM.as_bytes()).expect("SEC1 loads");
        let pkcs8 =
            VapidKey::from_pem(sec1.to_pkcs8_pem().expect("pem").as_bytes()).expect("PKCS#8 loads");
        assert_eq!(sec1.public_key_b64(), pkcs8.public_key_b64());
    }

    #[test]
    fn other_curves_garbage_and_rsa_are_refused() {
        assert!(matches!(
            VapidKey::from_pem(P384_PEM.as_bytes()),
            Err(VapidError::NotP256)
        ));
        assert!(matches!(
            VapidKey::from_pem(b"not a key"),
            Err(VapidError::Pem(_))
        ));
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            VapidKey::from_pem(rsa.as_bytes()),
            Err(VapidError::NotP256)
        ));
    }

    #[test]
    fn subjects_must_be_mailto_or_https() {
        assert!(check_subject("mailto:ops@example.com").is_ok());
        assert!(check_subject("https://example.com").is_ok());
        for bad in [
            "",
            "ops@example.com",
            "http://example.com",
            "mailto:",
            "https://",
            "mailto:a b@c",
        ] {
            assert!(check_subject(bad).is_err(), "{bad:?} accepted");
        }
    }
}
