//! Message encryption for Web Push: RFC 8291 key derivation on top of the
//! RFC 8188 `aes128gcm` content coding, one record per message.
//!
//! Everything comes from aws-lc-rs (the provider rustls already uses): P-256
//! ECDH (`agreement`), HKDF-SHA256 (`hkdf`), AES-128-GCM (`aead`) and the
//! random salt (`rand`). Every message gets a fresh ephemeral key pair and a
//! fresh salt, so no two messages share a content key.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf::{self, HKDF_SHA256, KeyType, Salt};

/// The record size we announce (`rs`): the one record a push message may have.
pub const RECORD_SIZE: u32 = 4096;
/// Bytes of the `aes128gcm` header: salt (16), rs (4), idlen (1), keyid (65).
pub const HEADER_LEN: usize = 16 + 4 + 1 + PUBLIC_KEY_LEN;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// The largest body push services must accept (RFC 8030 §7.2): header included.
pub const MAX_BODY: usize = 4096;
/// The largest plaintext that fits: the body minus header, tag and the
/// one-byte last-record delimiter (3993 bytes).
pub const MAX_PLAINTEXT: usize = MAX_BODY - HEADER_LEN - TAG_LEN - 1;
/// An uncompressed P-256 point: `0x04 || x || y`.
pub const PUBLIC_KEY_LEN: usize = 65;
/// The subscription's `auth` secret length (RFC 8291 §3.2).
pub const AUTH_LEN: usize = 16;

/// Why a subscription's keys are unusable (reported as the `rejected` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `p256dh` is not base64url.
    #[error("p256dh is not base64url")]
    P256dhEncoding,
    /// `p256dh` is not a 65-byte uncompressed point on P-256.
    #[error("p256dh is not an uncompressed P-256 point")]
    P256dhPoint,
    /// `auth` is not base64url of exactly 16 bytes.
    #[error("auth is not 16 bytes of base64url")]
    Auth,
}

/// Why a message could not be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// The plaintext does not fit one 4096-byte record.
    #[error("payload is {len} bytes; at most {MAX_PLAINTEXT} fit one Web Push record")]
    TooLarge {
        /// The plaintext length.
        len: usize,
    },
    /// The crypto library refused (never expected with validated keys).
    #[error("encryption failed in the crypto library")]
    Crypto,
}

impl From<aws_lc_rs::error::Unspecified> for EceError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        EceError::Crypto
    }
}

/// The user agent's half of a subscription: its ECDH public key and auth secret,
/// checked once at the edge.
#[derive(Clone, PartialEq, Eq)]
pub struct UaKeys {
    public: [u8; PUBLIC_KEY_LEN],
    auth: [u8; AUTH_LEN],
}

impl std::fmt::Debug for UaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth secret is a secret: never in logs.
        f.debug_struct("UaKeys").finish_non_exhaustive()
    }
}

impl UaKeys {
    /// Checks raw bytes: `public` must be an uncompressed point on P-256,
    /// `auth` exactly 16 bytes.
    pub fn new(public: &[u8], auth: &[u8]) -> Result<Self, KeyError> {
        let public: [u8; PUBLIC_KEY_LEN] = public.try_into().map_err(|_| KeyError::P256dhPoint)?;
        if public[0] != 0x04 {
            return Err(KeyError::P256dhPoint);
        }
        // Parsing checks that the point is on the curve.
        agreement::ParsedPublicKey::try_from(UnparsedPublicKey::new(&ECDH_P256, &public[..]))
            .map_err(|_| KeyError::P256dhPoint)?;
        let auth: [u8; AUTH_LEN] = auth.try_into().map_err(|_| KeyError::Auth)?;
        Ok(Self { public, auth })
    }

    /// Parses the browser's `keys.p256dh` and `keys.auth` (base64url, padding optional).
    pub fn parse(p256dh: &str, auth: &str) -> Result<Self, KeyError> {
        let public = b64_decode(p256dh).ok_or(KeyError::P256dhEncoding)?;
        let auth = b64_decode(auth).ok_or(KeyError::Auth)?;
        Self::new(&public, &auth)
    }

    /// The user agent's public key (65 bytes).
    pub fn public(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// The auth secret (16 bytes).
    pub fn auth(&self) -> &[u8; AUTH_LEN] {
        &self.auth
    }
}

/// Decodes base64url with or without `=` padding; the standard alphabet's
/// `+` and `/` are accepted too, since some libraries hand those out.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let cleaned: String = s
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cleaned)
        .ok()
}

/// base64url without padding, the form Web Push uses everywhere.
pub fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Encrypts `plaintext` for `keys` with a fresh ephemeral key and salt; the
/// result is the whole request body (header and the single record).
pub fn encrypt(plaintext: &[u8], keys: &UaKeys) -> Result<Vec<u8>, EceError> {
    check_len(plaintext)?;
    let ephemeral = PrivateKey::generate(&ECDH_P256)?;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)?;
    encrypt_with(plaintext, keys, &ephemeral, &salt)
}

fn check_len(plaintext: &[u8]) -> Result<(), EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        Err(EceError::TooLarge {
            len: plaintext.len(),
        })
    } else {
        Ok(())
    }
}

/// The deterministic core: `encrypt` with the ephemeral key and salt given
/// (the RFC 8291 example fixes both).
pub(crate) fn encrypt_with(
    plaintext: &[u8],
    keys: &UaKeys,
    ephemeral: &PrivateKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    check_len(plaintext)?;
    let as_public = ephemeral.compute_public_key()?;
    let as_public = as_public.as_ref();
    if as_public.len() != PUBLIC_KEY_LEN {
        return Err(EceError::Crypto);
    }

    // RFC 8291 §3.3–3.4: IKM from the ECDH secret, keyed by the auth secret
    // and bound to both public keys.
    let ikm = agreement::agree(
        ephemeral,
        UnparsedPublicKey::new(&ECDH_P256, &keys.public[..]),
        EceError::Crypto,
        |ecdh_secret| {
            let prk_key = Salt::new(HKDF_SHA256, &keys.auth).extract(ecdh_secret);
            let mut key_info = Vec::with_capacity(14 + 2 * PUBLIC_KEY_LEN);
            key_info.extend_from_slice(b"WebPush: info\0");
            key_info.extend_from_slice(&keys.public);
            key_info.extend_from_slice(as_public);
            expand::<32>(&prk_key, &key_info)
        },
    )?;

    // RFC 8188 §2.2–2.3: content key and nonce from the salt.
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek = expand::<16>(&prk, b"Content-Encoding: aes128gcm\0")?;
    let nonce = expand::<12>(&prk, b"Content-Encoding: nonce\0")?;

    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(as_public);

    // One record: plaintext, then 0x02 (the last-record delimiter), no padding.
    // Record sequence number 0, so the nonce is used as derived.
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek)?);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut record,
    )?;
    body.extend_from_slice(&record);
    Ok(body)
}

/// HKDF output length as an aws-lc-rs key type.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, info: &[u8]) -> Result<[u8; N], EceError> {
    let mut out = [0u8; N];
    prk.expand(&[info], Len(N))?.fill(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8291 Appendix A, every value as printed there (base64url).
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml\
                        mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT\
                        pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn d(s: &str) -> Vec<u8> {
        b64_decode(s).expect("test vector is base64url")
    }

    #[test]
    fn rfc8291_appendix_a_same_keys_and_salt_give_the_same_bytes() {
        let keys = UaKeys::parse(UA_PUBLIC, AUTH).expect("RFC keys are valid");
        let ephemeral = PrivateKey::from_private_key(&ECDH_P256, &d(AS_PRIVATE))
            .expect("RFC private key loads");
        assert_eq!(
            ephemeral.compute_public_key().expect("public").as_ref(),
            &d(AS_PUBLIC)[..]
        );
        let salt: [u8; 16] = d(SALT).try_into().expect("16-byte salt");
        let body = encrypt_with(PLAINTEXT.as_bytes(), &keys, &ephemeral, &salt).expect("encrypts");
        assert_eq!(b64_encode(&body), BODY);
        assert_eq!(body.len(), HEADER_LEN + PLAINTEXT.len() + 1 + TAG_LEN);
    }

    #[test]
    fn every_message_has_a_fresh_key_and_salt() {
        let keys = UaKeys::parse(UA_PUBLIC, AUTH).expect("valid");
        let a = encrypt(b"same", &keys).expect("encrypts");
        let b = encrypt(b"same", &keys).expect("encrypts");
        assert_ne!(a[..16], b[..16], "salt repeated");
        assert_ne!(
            a[21..HEADER_LEN],
            b[21..HEADER_LEN],
            "ephemeral key repeated"
        );
        assert_eq!(&a[16..20], &4096u32.to_be_bytes());
        assert_eq!(a[20], 65);
    }

    #[test]
    fn the_largest_plaintext_fits_4096_bytes_and_one_more_is_refused() {
        let keys = UaKeys::parse(UA_PUBLIC, AUTH).expect("valid");
        let body = encrypt(&vec![b'x'; MAX_PLAINTEXT], &keys).expect("fits");
        assert_eq!(body.len(), MAX_BODY);
        assert_eq!(MAX_PLAINTEXT, 3993);
        assert_eq!(
            encrypt(&vec![b'x'; MAX_PLAINTEXT + 1], &keys),
            Err(EceError::TooLarge {
                len: MAX_PLAINTEXT + 1
            })
        );
    }

    #[test]
    fn bad_keys_are_refused_with_their_reason() {
        assert_eq!(
            UaKeys::parse("not base64!", AUTH),
            Err(KeyError::P256dhEncoding)
        );
        // Right length, not on the curve.
        let mut off_curve = d(UA_PUBLIC);
        off_curve[64] ^= 1;
        assert_eq!(
            UaKeys::parse(&b64_encode(&off_curve), AUTH),
            Err(KeyError::P256dhPoint)
        );
        // Compressed form (33 bytes) is not what browsers send.
        let mut compressed = vec![0x02];
        compressed.extend_from_slice(&d(UA_PUBLIC)[1..33]);
        assert_eq!(
            UaKeys::parse(&b64_encode(&compressed), AUTH),
            Err(KeyError::P256dhPoint)
        );
        assert_eq!(
            UaKeys::parse(UA_PUBLIC, &b64_encode(&[0u8; 15])),
            Err(KeyError::Auth)
        );
        assert_eq!(UaKeys::parse(UA_PUBLIC, "%%%"), Err(KeyError::Auth));
    }

    #[test]
    fn padded_and_standard_alphabet_base64_are_accepted() {
        let std_padded = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(d(UA_PUBLIC))
        };
        assert!(std_padded.ends_with('=') || std_padded.contains('+') || std_padded.contains('/'));
        assert_eq!(
            UaKeys::parse(&std_padded, AUTH),
            UaKeys::parse(UA_PUBLIC, AUTH)
        );
    }
}
