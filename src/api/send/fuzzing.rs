//! Entry points for `fuzz/` (`cargo fuzz`): the send bodies' parsers and what
//! they feed, without a server. Each returns (never panics) on any input.

use crate::platform::request::{form_int, parse_form};

pub use crate::apns::front::fuzz_json as apns_json;
pub use crate::fcm::front::fuzz_json as google_json;

/// A form body (GoCM): split it, check the integer fields, take in the tokens.
pub fn form(bytes: &[u8]) {
    if let Ok(form) = parse_form(bytes) {
        for (key, value) in &form.fields {
            let _ = form_int(key, value);
        }
        let keep: crate::platform::Keep<'_> =
            Box::new(|raw, out| crate::apns::token::keep(raw, out).map_err(Into::into));
        let _ = super::intake::intake(&form.tokens, 64, &keep);
    }
}
