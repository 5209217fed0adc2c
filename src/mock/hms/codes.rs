//! Huawei's send result codes, each with the HTTP status the mock answers it
//! with: one table, so the status a code travels with is decided once.
//!
//! Source: the result code tables of the HMS Core "Sending Downlink Messages"
//! API reference (`https-send-api-0000001050986197`): HTTP 200 success, 400
//! parameter error, 401 authentication failure, 500 internal error, 503 flow
//! control; the business codes below. Huawei does not say which HTTP status
//! each business code travels with beyond those classes, nor which code a 503
//! carries; the choices are listed per variant.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

/// A Push Kit result code (`"code"` in every answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `80000000`, HTTP 200: every token accepted.
    Success,
    /// `80100000`, HTTP 200: some tokens accepted; `msg` is a JSON text
    /// naming the `illegal_tokens`.
    PartialSuccess,
    /// `80100001`, HTTP 400: a request parameter is wrong.
    ParameterError,
    /// `80100003`, HTTP 400: the message structure is wrong.
    IncorrectMessage,
    /// `80100013`, HTTP 400: `android.collapse_key` is invalid.
    InvalidCollapseKey,
    /// `80200001`, HTTP 401: no, a bad, or another app's access token.
    AuthError,
    /// `80200003`, HTTP 401: the access token expired; get a new one.
    TokenExpired,
    /// `80300007`, HTTP 400: every token is invalid. (Huawei's table only
    /// files it under the parameter errors; some clients have seen it with
    /// 200. The mock picks 400 so a client that reads the body code only on
    /// 200 is caught.)
    AllTokensInvalid,
    /// `80300008`, HTTP 400: the message without its tokens is over 4096 bytes.
    MessageTooBig,
    /// `80300010`, HTTP 400: token count outside 1..=1000 (also a misspelt
    /// `message` or `token` key: Huawei then finds no token).
    TokenCount,
    /// `81000001`, HTTP 500: Huawei's internal error.
    InternalError,
    /// HTTP 503 flow control. Huawei documents the status, not a body code;
    /// the mock sends `81000001` with it.
    FlowControl,
}

impl Code {
    /// Every variant, for the round-trip test.
    pub const ALL: [Code; 12] = [
        Code::Success,
        Code::PartialSuccess,
        Code::ParameterError,
        Code::IncorrectMessage,
        Code::InvalidCollapseKey,
        Code::AuthError,
        Code::TokenExpired,
        Code::AllTokensInvalid,
        Code::MessageTooBig,
        Code::TokenCount,
        Code::InternalError,
        Code::FlowControl,
    ];

    /// The eight digits sent as `"code"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Success => "80000000",
            Code::PartialSuccess => "80100000",
            Code::ParameterError => "80100001",
            Code::IncorrectMessage => "80100003",
            Code::InvalidCollapseKey => "80100013",
            Code::AuthError => "80200001",
            Code::TokenExpired => "80200003",
            Code::AllTokensInvalid => "80300007",
            Code::MessageTooBig => "80300008",
            Code::TokenCount => "80300010",
            Code::InternalError | Code::FlowControl => "81000001",
        }
    }

    /// The HTTP status the code travels with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Success | Code::PartialSuccess => StatusCode::OK,
            Code::ParameterError
            | Code::IncorrectMessage
            | Code::InvalidCollapseKey
            | Code::AllTokensInvalid
            | Code::MessageTooBig
            | Code::TokenCount => StatusCode::BAD_REQUEST,
            Code::AuthError | Code::TokenExpired => StatusCode::UNAUTHORIZED,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::FlowControl => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The default `msg`, when the answer has no more specific one.
    pub fn message(self) -> &'static str {
        match self {
            Code::Success => "Success",
            Code::PartialSuccess => "Some tokens are invalid",
            Code::ParameterError => "Parameter error",
            Code::IncorrectMessage => "Incorrect message structure",
            Code::InvalidCollapseKey => "Invalid collapse_key",
            Code::AuthError => "OAuth authentication error",
            Code::TokenExpired => "OAuth token expired",
            Code::AllTokensInvalid => "All the tokens are invalid",
            Code::MessageTooBig => "Message body size exceeds the default value (4096 bytes)",
            Code::TokenCount => "The number of tokens must be 1 to 1000",
            Code::InternalError => "System internal error",
            Code::FlowControl => "Flow control, please try again later",
        }
    }

    /// The answer: `{"code","msg","requestId"}` with this code's status.
    pub fn answer(self, msg: &str, request_id: &str) -> Response {
        let body = serde_json::json!({
            "code": self.as_str(),
            "msg": msg,
            "requestId": request_id,
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        response
    }

    /// [`Code::answer`] with the default message.
    pub fn plain(self, request_id: &str) -> Response {
        self.answer(self.message(), request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_eight_digits_and_the_status_of_its_class() {
        for code in Code::ALL {
            let digits = code.as_str();
            assert_eq!(digits.len(), 8, "{code:?}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
            assert!(!code.message().is_empty(), "{code:?}");
            // Huawei's classes: 801/803 parameters, 802 authentication, 810
            // system; the two success codes and flow control are the exceptions.
            let want = match (code, &digits[..3]) {
                (Code::Success | Code::PartialSuccess, _) => 200,
                (Code::FlowControl, _) => 503,
                (_, "801" | "803") => 400,
                (_, "802") => 401,
                (_, "810") => 500,
                (_, other) => panic!("unexpected class {other} for {code:?}"),
            };
            assert_eq!(code.status().as_u16(), want, "{code:?}");
        }
    }

    #[tokio::test]
    async fn answers_carry_code_msg_and_request_id() {
        for code in Code::ALL {
            let response = code.plain("1234");
            assert_eq!(response.status(), code.status());
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .expect("body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(json["code"], code.as_str());
            assert_eq!(json["msg"], code.message());
            assert_eq!(json["requestId"], "1234");
        }
    }
}
