//! `POST /oauth2/v3/token`: the client credentials grant of Huawei's Account
//! Kit server, the way its "Obtaining an App-level Access Token" reference
//! describes it (form fields, the `error` / `sub_error` pairs, HTTP 400).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq as _;

use super::Shared;

const CLIENT_CREDENTIALS: &str = "client_credentials";

/// One refusal: Huawei's main error, sub-error and description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub error: u32,
    pub sub_error: u32,
    pub description: &'static str,
}

const NO_GRANT_TYPE: Refusal = Refusal {
    error: 1102,
    sub_error: 20181,
    description: "grant_type is empty",
};
const BAD_GRANT_TYPE: Refusal = Refusal {
    error: 1101,
    sub_error: 20182,
    description: "invalid grant_type",
};
const NO_CLIENT_ID: Refusal = Refusal {
    error: 1102,
    sub_error: 20001,
    description: "client_id is empty",
};
const BAD_CLIENT_ID: Refusal = Refusal {
    error: 1101,
    sub_error: 20002,
    description: "invalid client_id",
};
const UNKNOWN_CLIENT_ID: Refusal = Refusal {
    error: 1203,
    sub_error: 12303,
    description: "client_id does not exist",
};
const NO_SECRET: Refusal = Refusal {
    error: 1101,
    sub_error: 20171,
    description: "client_secret is empty",
};
const BAD_SECRET_TEXT: Refusal = Refusal {
    error: 1101,
    sub_error: 20172,
    description: "invalid client_secret format",
};
const WRONG_SECRET: Refusal = Refusal {
    error: 1101,
    sub_error: 12304,
    description: "invalid client_secret",
};

/// Huawei's client id rule: `^[0-9]{1,64}$`.
pub(super) fn is_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// Huawei's client secret rule: `^[0-9a-zA-Z=/+]+$`.
pub(super) fn is_secret_text(secret: &str) -> bool {
    !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=/+".contains(&b))
}

/// True when the content type is `application/x-www-form-urlencoded`
/// (parameters such as `charset` allowed).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The form fields the grant reads; the first of a repeated field counts.
#[derive(Debug, Default)]
struct Form {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl Form {
    fn parse(body: &[u8]) -> Self {
        let mut form = Form::default();
        for (key, value) in form_urlencoded::parse(body) {
            let slot = match &*key {
                "grant_type" => &mut form.grant_type,
                "client_id" => &mut form.client_id,
                "client_secret" => &mut form.client_secret,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        form
    }
}

/// Checks the grant in the order the refusal table of the module docs lists;
/// on success, the app id the token is for.
fn check(shared: &Shared, form: &Form) -> Result<String, Refusal> {
    let present = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let grant_type = present(&form.grant_type).ok_or(NO_GRANT_TYPE)?;
    if grant_type != CLIENT_CREDENTIALS {
        return Err(BAD_GRANT_TYPE);
    }
    let client_id = present(&form.client_id).ok_or(NO_CLIENT_ID)?;
    if !is_client_id(&client_id) {
        return Err(BAD_CLIENT_ID);
    }
    let expected = shared.apps.get(&client_id).ok_or(UNKNOWN_CLIENT_ID)?;
    let secret = present(&form.client_secret).ok_or(NO_SECRET)?;
    if !is_secret_text(&secret) {
        return Err(BAD_SECRET_TEXT);
    }
    // Constant time: the secret is a credential.
    if !bool::from(secret.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(WRONG_SECRET);
    }
    Ok(client_id)
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    // A token answer must not be cached (RFC 6749 §5.1), and Huawei says so.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refuse(refusal: Refusal) -> Response {
    let body = serde_json::json!({
        "error": refusal.error,
        "sub_error": refusal.sub_error,
        "error_description": refusal.description,
    });
    json(StatusCode::BAD_REQUEST, body.to_string())
}

/// A fresh access token in the shape Huawei hands out: base64 text with `/`,
/// `+` and `=` in it, so a client must take it verbatim from parsed JSON.
fn new_access_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 72];
    fastrand::fill(&mut bytes);
    let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    format!("DgEAA{}/{}+{}==", &text[..32], &text[32..64], &text[64..])
}

/// `POST /oauth2/v3/token`.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A body that is not form-encoded is not read as a form: Huawei warns the
    // request then fails, and its first missing field is grant_type.
    let form = if is_form(&headers) {
        Form::parse(&body)
    } else {
        Form::default()
    };
    let app_id = match check(&shared, &form) {
        Ok(app_id) => app_id,
        Err(refusal) => return refuse(refusal),
    };
    let access_token = new_access_token();
    shared.grant(&app_id, &access_token);
    shared.ledger.grants.fetch_add(1, Ordering::Relaxed);
    // Written by hand so that `/` goes out as `\/`, as Huawei's JSON has it;
    // the token holds only base64 characters, nothing else needs escaping.
    json(
        StatusCode::OK,
        format!(
            "{{\"access_token\":\"{}\",\"expires_in\":{},\"token_type\":\"Bearer\"}}",
            access_token.replace('/', "\\/"),
            shared.expires_in_s
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_and_secret_rules_follow_huawei() {
        assert!(is_client_id("104000000"));
        assert!(is_client_id(&"1".repeat(64)));
        for bad in ["", "10400000a", " 104", &"1".repeat(65)] {
            assert!(!is_client_id(bad), "{bad:?}");
        }
        assert!(is_secret_text("aB9+/="));
        for bad in ["", "a b", "a-b", "a%2B"] {
            assert!(!is_secret_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn forms_keep_the_first_of_a_repeated_field_and_decode_plus_as_space() {
        let form = Form::parse(b"grant_type=a&grant_type=b&client_secret=x+y%2Bz");
        assert_eq!(form.grant_type.as_deref(), Some("a"));
        assert_eq!(form.client_secret.as_deref(), Some("x y+z"));
        assert_eq!(form.client_id, None);
    }

    #[test]
    fn access_tokens_hold_the_characters_clients_get_wrong() {
        let token = new_access_token();
        for c in ['/', '+', '='] {
            assert!(token.contains(c), "{token}");
        }
        assert_ne!(token, new_access_token());
    }
}
