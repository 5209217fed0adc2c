//! A throwaway PKI for the mocks, the demo and the tests: one CA, a server
//! certificate for `localhost`/`127.0.0.1`, and a client certificate for APNs
//! certificate authentication. Made fresh at start; nothing touches the disk.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    /// The certificate (chain) in PEM.
    pub cert_pem: String,
    /// The private key in PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret even in a test PKI: keep it out of logs.
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A CA with a server and a client certificate it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate in PEM: what clients pass as `ca_file`.
    pub ca_pem: String,
    /// Server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub server: Identity,
    /// Client certificate (for APNs certificate auth), subject `pushgate test client`.
    pub client: Identity,
}

/// Errors building the test PKI or a TLS config from it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not build a certificate.
    #[error("generating a test certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The server configuration could not be built.
    #[error(transparent)]
    Server(#[from] crate::tls::ServerTlsError),
}

impl TestPki {
    /// Generates a fresh CA, server and client certificate (ECDSA P-256).
    pub fn generate() -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pushgate test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "pushgate mock upstream");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "pushgate test client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            server: Identity {
                cert_pem: server_cert.pem(),
                key_pem: server_key.serialize_pem(),
            },
            client: Identity {
                cert_pem: client_cert.pem(),
                key_pem: client_key.serialize_pem(),
            },
        })
    }
}

/// Builds a rustls server config for `identity` offering `alpn` protocols, and
/// requiring a client certificate signed by `client_ca_pem` when given.
pub fn server_config(
    identity: &Identity,
    alpn: &[&[u8]],
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(crate::tls::server_config(
        &identity.cert_pem,
        &identity.key_pem,
        alpn,
        client_ca_pem,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pki_builds_server_configs_with_and_without_client_auth() {
        let pki = TestPki::generate().expect("pki");
        assert!(pki.ca_pem.contains("BEGIN CERTIFICATE"));
        let plain = server_config(&pki.server, &[b"h2"], None).expect("plain");
        assert_eq!(plain.alpn_protocols, vec![b"h2".to_vec()]);
        let mtls = server_config(&pki.server, &[b"h2"], Some(&pki.ca_pem)).expect("mtls");
        assert_eq!(mtls.alpn_protocols.len(), 1);
        assert!(!format!("{:?}", pki.client).contains("PRIVATE KEY"));
    }
}
