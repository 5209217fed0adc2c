//! Mock APNs: HTTP/2 over TLS (placeholder; being written).

use anyhow::Context as _;

/// Generates an ES256 provider key like Apple's `AuthKey_XXXX.p8`: returns the PKCS#8
/// PEM private key and the SPKI PEM public key.
// Stand-in, identical to the mock-apns branch's, so that the lib tests compile
// before that branch lands; take theirs on merge.
pub fn generate_provider_key() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating an ES256 provider key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
