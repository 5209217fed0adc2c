//! `check-config --connect` for Web Push apps: there is no credential
//! endpoint to ask, so the proof is local. The configured VAPID key signs a
//! JWT (as the gateway signs one per push-service origin), and the
//! signature is verified against the public key the browsers get as
//! `applicationServerKey`.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::webpush::vapid::Vapid;

/// The audience the probe JWT is signed for (any push-service origin would do).
const PROBE_ORIGIN: &str = "https://fcm.googleapis.com";

/// `(proven, what to print)` for one app's signer.
pub fn probe(vapid: &Vapid) -> (bool, String) {
    let public = vapid.key().public_key_b64().to_owned();
    match signed_and_verified(vapid, &public) {
        Ok(()) => (
            true,
            format!(
                "VAPID JWT signed (ES256) and verified; public key (applicationServerKey) {public}"
            ),
        ),
        Err(why) => (false, format!("VAPID key cannot sign: {why}")),
    }
}

fn signed_and_verified(vapid: &Vapid, public: &str) -> Result<(), String> {
    let header = vapid
        .authorization(PROBE_ORIGIN)
        .map_err(|_| "signing the JWT failed".to_owned())?;
    let header = header
        .to_str()
        .map_err(|_| "the Authorization value is not text".to_owned())?;
    let jwt = header
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split(',').next())
        .ok_or_else(|| format!("unexpected Authorization shape: {header}"))?;
    let (signed, signature) = jwt
        .rsplit_once('.')
        .ok_or_else(|| "the JWT has no signature".to_owned())?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("the JWT signature is not base64url: {e}"))?;
    let key = URL_SAFE_NO_PAD
        .decode(public)
        .map_err(|e| format!("the public key is not base64url: {e}"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "the JWT signature does not verify with the public key".to_owned())
}
