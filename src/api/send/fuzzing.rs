//! Entry points for `fuzz/` (`cargo fuzz`): the send bodies' parsers and what
//! they feed, without a server. Each returns (never panics) on any input.

use super::body::{form_int, parse_form};
use super::intake::intake;

pub use super::apns::fuzz_json as apns_json;
pub use super::google::fuzz_json as google_json;

/// A form body (GoCM): split it, check the integer fields, take in the tokens.
pub fn form(bytes: &[u8]) {
    if let Ok(form) = parse_form(bytes) {
        for (key, value) in &form.fields {
            let _ = form_int(key, value);
        }
        let _ = intake(&form.tokens, 64, crate::apns::token::keep);
    }
}
