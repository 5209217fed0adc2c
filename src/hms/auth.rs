//! The app-level access token of Huawei's OAuth 2.0 client credentials
//! grant: `grant_type=client_credentials&client_id=<app id>&client_secret=<secret>`,
//! form-encoded (a secret holds `+`, `/` and `=`, which a form must escape),
//! traded at `token_uri` for `{"access_token","expires_in"}`. The token is
//! cached until shortly before it expires and shared by every request (the
//! cache is [`crate::oauth`]'s, written once with FCM's).
//!
//! Concurrent callers that find the cache stale wait on one refresh (single
//! flight), and a burst of 401 answers for the same token causes one refresh:
//! [`AccessToken::invalidate`] only drops the token that was rejected. Neither
//! the token nor the secret is ever logged.
//!
//! With a shared backend (`redis`), [`AccessToken::share`] makes the cluster
//! use one access token per app id: a refresh first looks at the cluster's,
//! and only the gateway holding the mint lock asks Huawei.

use std::time::Duration;

use http::HeaderValue;
use prometheus::IntCounter;

use crate::oauth::{self, Answer, Grantor, TokenCache, TokenError, truncate};
use crate::settings::Secret;

/// The grant Push Kit's server API uses.
pub const GRANT_TYPE: &str = "client_credentials";
/// `expires_in` assumed when the answer leaves it out (Huawei's is 3600).
const DEFAULT_LIFETIME_S: u64 = 3600;

/// Errors obtaining an access token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint refused the credentials (wrong app id or secret).
    #[error("the token endpoint {uri} refused the credentials: HTTP {status}: {error}")]
    Refused {
        /// `token_uri`.
        uri: String,
        /// The HTTP status.
        status: u16,
        /// Huawei's `error`, `sub_error` and `error_description` (they never
        /// echo the secret).
        error: String,
    },
    /// The token endpoint could not be reached or answered without a usable
    /// token, or a refresh failed moments ago (not retried yet).
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl AuthError {
    /// True when the token endpoint itself said no: a configuration problem an
    /// operator must hear about, not a network blip. A 5xx from the token
    /// endpoint is its trouble, not ours.
    pub fn is_refusal(&self) -> bool {
        match self {
            AuthError::Refused { status, .. } => !(500..=599).contains(status),
            AuthError::Token(e) => e.is_refusal(),
        }
    }
}

impl oauth::GrantError for AuthError {
    fn is_refusal(&self) -> bool {
        // The inherent method above, which callers use without this trait.
        AuthError::is_refusal(self)
    }
}

/// The form body of the grant, every value form-encoded.
pub fn grant_form(app_id: &str, secret: &Secret) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", GRANT_TYPE)
        .append_pair("client_id", app_id)
        .append_pair("client_secret", secret.expose())
        .finish()
}

/// Huawei's refusal: `{"error":1101,"sub_error":20172,"error_description":"…"}`
/// (numbers; a string is read too).
fn refusal_text(body: &[u8]) -> String {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice(body) else {
        return "no OAuth error in the answer".to_owned();
    };
    let word = |key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut text = match (word("error"), word("sub_error")) {
        (Some(e), Some(s)) => format!("error {e}, sub_error {s}"),
        (Some(e), None) => format!("error {e}"),
        (None, _) => "no OAuth error in the answer".to_owned(),
    };
    if let Some(d) = word("error_description") {
        text.push_str(": ");
        text.push_str(truncate(&d, 300));
    }
    text
}

/// How Huawei grants a token: the app's client credentials, form-encoded.
pub struct ClientCredentials {
    client: reqwest::Client,
    token_uri: String,
    app_id: String,
    secret: Secret,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_uri", &self.token_uri)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// The cached access token of one app.
pub type AccessToken = TokenCache<ClientCredentials>;

impl AccessToken {
    /// A token source for `app_id`, asking `token_uri` through `client`;
    /// every grant obtained counts on `refreshes`.
    pub fn new(
        app_id: &str,
        secret: Secret,
        token_uri: &str,
        client: reqwest::Client,
        refreshes: IntCounter,
    ) -> Self {
        let grantor = ClientCredentials {
            client,
            token_uri: token_uri.to_owned(),
            app_id: app_id.to_owned(),
            secret,
        };
        // One token per app id in a cluster.
        TokenCache::over(grantor, format!("hms:{app_id}"), refreshes)
    }
}

impl Grantor for ClientCredentials {
    type Error = AuthError;

    const PLATFORM: &'static str = "HMS";

    async fn fetch(&self) -> Result<(HeaderValue, Duration), AuthError> {
        let form = grant_form(&self.app_id, &self.secret);
        match oauth::ask(&self.client, &self.token_uri, form).await? {
            Answer::Granted {
                mut value,
                expires_in,
            } => {
                value.set_sensitive(true);
                let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME_S).max(1);
                Ok((value, Duration::from_secs(lifetime)))
            }
            Answer::Refused { status, body } => Err(AuthError::Refused {
                uri: self.token_uri.clone(),
                status,
                error: refusal_text(&body),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_form_encodes_the_secret() {
        let form = grant_form("104000000", &Secret::new("ab+c/d=e&f g"));
        assert_eq!(
            form,
            "grant_type=client_credentials&client_id=104000000&client_secret=ab%2Bc%2Fd%3De%26f+g"
        );
        // Decoded by any form reader, the secret comes back whole.
        let secret = form_urlencoded::parse(form.as_bytes())
            .find(|(k, _)| k == "client_secret")
            .map(|(_, v)| v.into_owned());
        assert_eq!(secret.as_deref(), Some("ab+c/d=e&f g"));
    }

    #[test]
    fn huawei_refusals_name_error_and_sub_error_and_5xx_is_no_refusal() {
        let text = refusal_text(
            br#"{"error":1101,"sub_error":20172,"error_description":"invalid client_secret format"}"#,
        );
        assert_eq!(
            text,
            "error 1101, sub_error 20172: invalid client_secret format"
        );
        assert_eq!(refusal_text(b"<html>"), "no OAuth error in the answer");
        let refused = |status| AuthError::Refused {
            uri: "u".into(),
            status,
            error: String::new(),
        };
        assert!(refused(400).is_refusal());
        assert!(!refused(503).is_refusal());
    }
}
