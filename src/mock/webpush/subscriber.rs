//! The browser's side of the mock: ready-made subscriptions whose private keys
//! the mock can re-derive from a seed, and the decryption a user agent does
//! (RFC 8291 + RFC 8188), written apart from `webpush::ece`.
//!
//! Keys are derived, not stored: subscription `<kind>/<id>` has the private
//! key `HMAC-SHA256(seed, "p256|<kind>/<id>|<n>")` (the first `n` that gives a
//! valid scalar) and the auth secret `HMAC-SHA256(seed, "auth|<kind>/<id>")[..16]`.
//! So the mock can hand out a million subscriptions and decrypt any of them
//! without keeping a table, and a restarted mock with the same seed still can.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a body did not decrypt (the mock answers 400 with this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptError {
    /// Shorter than the header, bad `idlen`, or no room for a tag.
    BadHeader,
    /// `rs` is below 18 or the body is more than one record.
    BadRecordSize,
    /// The key id is not a P-256 point, or the ECDH failed.
    BadKeyId,
    /// The tag did not verify (wrong keys, tampering).
    AuthenticationFailed,
    /// No `0x02` delimiter after the plaintext (not a lone last record).
    BadPadding,
}

impl DecryptError {
    /// The reason word.
    pub fn as_str(self) -> &'static str {
        match self {
            DecryptError::BadHeader => "BadEncryptionHeader",
            DecryptError::BadRecordSize => "BadRecordSize",
            DecryptError::BadKeyId => "BadKeyId",
            DecryptError::AuthenticationFailed => "DecryptionFailed",
            DecryptError::BadPadding => "BadPadding",
        }
    }
}

/// Derives subscription keys from one seed.
#[derive(Clone)]
pub struct Subscriber {
    seed: hmac::Key,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber for `seed` (any bytes; the mock's `--seed`).
    pub fn new(seed: &[u8]) -> Self {
        Self {
            seed: hmac::Key::new(hmac::HMAC_SHA256, seed),
        }
    }

    fn private_key(&self, path_id: &str) -> Option<PrivateKey> {
        (0u32..16).find_map(|n| {
            let tag = hmac::sign(&self.seed, format!("p256|{path_id}|{n}").as_bytes());
            PrivateKey::from_private_key(&ECDH_P256, tag.as_ref()).ok()
        })
    }

    fn auth(&self, path_id: &str) -> [u8; 16] {
        let tag = hmac::sign(&self.seed, format!("auth|{path_id}").as_bytes());
        let mut auth = [0u8; 16];
        auth.copy_from_slice(&tag.as_ref()[..16]);
        auth
    }

    /// `(p256dh, auth)` in base64url for the subscription `path_id`
    /// (`<kind>/<id>`), as a browser's `PushSubscription.toJSON()` gives them.
    pub fn keys(&self, path_id: &str) -> Option<(String, String)> {
        let public = self.private_key(path_id)?.compute_public_key().ok()?;
        Some((
            URL_SAFE_NO_PAD.encode(public.as_ref()),
            URL_SAFE_NO_PAD.encode(self.auth(path_id)),
        ))
    }

    /// Decrypts a request body sent to `path_id`.
    pub fn decrypt(&self, path_id: &str, body: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let private = self.private_key(path_id).ok_or(DecryptError::BadKeyId)?;
        let ua_public = private
            .compute_public_key()
            .map_err(|_| DecryptError::BadKeyId)?;
        decrypt(&private, ua_public.as_ref(), &self.auth(path_id), body)
    }
}

/// One HKDF-SHA256 (RFC 5869) extract-and-expand, for outputs up to 32 bytes.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut t = info.to_vec();
    t.push(1);
    let okm = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &t);
    okm.as_ref()[..len].to_vec()
}

/// The `aes128gcm` header (RFC 8188 §2.1) of a single-record body.
pub struct Header<'a> {
    salt: &'a [u8],
    key_id: &'a [u8],
    record: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks what a push service can check without the subscription's
    /// private key: a 65-byte key id (an uncompressed P-256 point, RFC 8291
    /// §4), room for a tag and a delimiter, one record no larger than `rs`.
    pub fn parse(body: &'a [u8]) -> Result<Self, DecryptError> {
        if body.len() < 21 {
            return Err(DecryptError::BadHeader);
        }
        let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let idlen = usize::from(body[20]);
        if idlen != 65 || body.len() < 21 + idlen + 16 + 1 {
            return Err(DecryptError::BadHeader);
        }
        let header = Header {
            salt: &body[..16],
            key_id: &body[21..21 + idlen],
            record: &body[21 + idlen..],
        };
        if rs < 18 || header.record.len() > rs {
            return Err(DecryptError::BadRecordSize);
        }
        if header.key_id[0] != 0x04 {
            return Err(DecryptError::BadKeyId);
        }
        Ok(header)
    }
}

/// The user agent's decryption: parse the `aes128gcm` header, ECDH with the
/// sender's key id, derive as RFC 8291 §3.4 says, open the single record.
pub fn decrypt(
    ua_private: &PrivateKey,
    ua_public: &[u8],
    auth: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    let Header {
        salt,
        key_id,
        record,
    } = Header::parse(body)?;
    let ikm = agreement::agree(
        ua_private,
        UnparsedPublicKey::new(&ECDH_P256, key_id),
        DecryptError::BadKeyId,
        |secret| {
            let mut info = b"WebPush: info\0".to_vec();
            info.extend_from_slice(ua_public);
            info.extend_from_slice(key_id);
            Ok(hkdf(auth, secret, &info, 32))
        },
    )?;
    let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", 16);
    let nonce = hkdf(salt, &ikm, b"Content-Encoding: nonce\0", 12);
    let key =
        UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| DecryptError::AuthenticationFailed)?;
    let nonce =
        Nonce::try_assume_unique_for_key(&nonce).map_err(|_| DecryptError::AuthenticationFailed)?;
    let mut buf = record.to_vec();
    let plain = LessSafeKey::new(key)
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| DecryptError::AuthenticationFailed)?;
    // Padding: the plaintext, one delimiter (0x02: last record), then zeros.
    let end = plain
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(DecryptError::BadPadding)?;
    if plain[end] != 0x02 {
        return Err(DecryptError::BadPadding);
    }
    Ok(plain[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("b64url")
    }

    /// RFC 8291 Appendix A from the receiving side: the UA's private key opens
    /// the RFC's message to the RFC's plaintext.
    #[test]
    fn decrypts_the_rfc8291_example() {
        let ua = PrivateKey::from_private_key(
            &ECDH_P256,
            &d("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"),
        )
        .expect("key");
        let ua_public = ua.compute_public_key().expect("public");
        let body = d(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        let plain = decrypt(&ua, ua_public.as_ref(), &d("BTBZMqHH6r4Tts7J_aSIgg"), &body)
            .expect("decrypts");
        assert_eq!(plain, b"When I grow up, I want to be a watermelon");
        let mut tampered = body.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            decrypt(
                &ua,
                ua_public.as_ref(),
                &d("BTBZMqHH6r4Tts7J_aSIgg"),
                &tampered
            ),
            Err(DecryptError::AuthenticationFailed)
        );
        assert_eq!(
            decrypt(&ua, ua_public.as_ref(), b"0123456789abcdef", &body[..20]),
            Err(DecryptError::BadHeader)
        );
    }

    /// What a push service checks without the private key: the RFC's body
    /// passes, and each broken header field is refused with its reason.
    #[test]
    fn the_header_alone_is_checked_without_keys() {
        let body = d(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert!(Header::parse(&body).is_ok());
        let broken = |at: usize, value: u8| {
            let mut b = body.clone();
            b[at] = value;
            Header::parse(&b).err()
        };
        assert_eq!(broken(20, 64), Some(DecryptError::BadHeader)); // idlen
        assert_eq!(broken(21, 0x02), Some(DecryptError::BadKeyId)); // not uncompressed
        let mut small_rs = body.clone();
        small_rs[16..20].copy_from_slice(&17u32.to_be_bytes());
        assert_eq!(
            Header::parse(&small_rs).err(),
            Some(DecryptError::BadRecordSize)
        );
        assert_eq!(
            Header::parse(&body[..21 + 65 + 16]).err(),
            Some(DecryptError::BadHeader)
        );
    }

    #[test]
    fn derived_keys_are_stable_and_distinct() {
        let s = Subscriber::new(b"seed");
        assert_eq!(s.keys("ok/1"), s.keys("ok/1"));
        assert_ne!(s.keys("ok/1"), s.keys("ok/2"));
        assert_ne!(s.keys("ok/1"), Subscriber::new(b"other").keys("ok/1"));
        let (p256dh, auth) = s.keys("ok/1").expect("keys");
        assert_eq!(d(&p256dh).len(), 65);
        assert_eq!(d(&auth).len(), 16);
    }
}
