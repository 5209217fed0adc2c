//! TLS configurations, all on one crypto provider (aws-lc-rs): clients of every
//! upstream (the public web roots plus any `ca_file` roots, optional client
//! certificate), and servers (the API listener with `server.tls_cert`, and the
//! mock upstreams).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds a client config trusting the Mozilla roots plus `extra_roots`.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Errors building a server TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A PEM input did not parse.
    #[error("reading PEM ({what}): {source}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parse error.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA store could not be built.
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Builds a server config from a PEM certificate chain and key, offering `alpn`,
/// and requiring a client certificate signed by `client_ca_pem` when given.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, ServerTlsError> {
    let certs = parse_certs(cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| {
        ServerTlsError::Pem {
            what: "server key",
            source,
        }
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match client_ca_pem {
        Some(ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in parse_certs(ca_pem, "client CA")? {
                roots.add(cert)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn parse_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServerTlsError::Pem { what, source })
}
