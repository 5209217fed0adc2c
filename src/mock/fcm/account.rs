//! A throwaway Google service account: the key pair the mock verifies against
//! and the JSON file a client loads.

use anyhow::Context as _;

/// A freshly generated Google service account (RSA 2048, as Google issues them).
#[derive(Clone)]
pub struct ServiceAccountFixture {
    /// The Firebase / Google Cloud project.
    pub project_id: String,
    /// The account's email: the `iss` of its OAuth assertions.
    pub client_email: String,
    /// PKCS#8 PEM private key (what the JSON file's `private_key` holds).
    pub private_key_pem: String,
    /// SPKI PEM public key, for the mock to verify assertions with.
    pub public_key_pem: String,
    /// Key id (40 hex digits), the JSON file's `private_key_id`.
    pub private_key_id: String,
}

impl ServiceAccountFixture {
    /// Generates a new RSA 2048 key pair and account identity for `project_id`.
    pub fn generate(project_id: &str) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .context("generating the service account's RSA key")?;
        let private_key_id = format!(
            "{:016x}{:016x}{:08x}",
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u32(..)
        );
        Ok(Self {
            project_id: project_id.to_owned(),
            client_email: format!("pushgate-mock@{project_id}.iam.gserviceaccount.com"),
            private_key_pem: key.serialize_pem(),
            public_key_pem: key.public_key_pem(),
            private_key_id,
        })
    }

    /// The JSON file content Google hands out for this account, with `token_uri`
    /// pointing at `token_uri` (the mock's `/token`).
    pub fn to_json(&self, token_uri: &str) -> String {
        // Deterministic per account, so two calls give the same file.
        let client_id: String = self
            .private_key_id
            .bytes()
            .take(21)
            .map(|b| char::from(b'0' + b % 10))
            .collect();
        let cert_email = self.client_email.replace('@', "%40");
        let value = serde_json::json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{cert_email}"),
            "universe_domain": "googleapis.com",
        });
        // Serializing a `Value` built from strings cannot fail; pretty like Google's file.
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    }
}

impl std::fmt::Debug for ServiceAccountFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is a secret even in a fixture: keep it out of logs.
        f.debug_struct("ServiceAccountFixture")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key_pem", &"<redacted>")
            .field("public_key_pem", &self.public_key_pem)
            .finish()
    }
}
