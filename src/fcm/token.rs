//! FCM and legacy GCM registration tokens: opaque text that Google issues;
//! kept, sent and shown as written.

/// Google's word for a token that is not one (the reason in `rejected`).
pub const INVALID_REGISTRATION: &str = "InvalidRegistration";

/// Longest registration token accepted (bytes).
pub const MAX_BYTES: usize = 4096;

/// Checks a registration token (non-empty printable ASCII, at most
/// [`MAX_BYTES`]) and appends it to `out`.
pub fn keep(token: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let ok = !token.is_empty()
        && token.len() <= MAX_BYTES
        && token.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(INVALID_REGISTRATION);
    }
    out.extend_from_slice(token.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_tokens_are_opaque_printable_ascii() {
        assert!(keep("abc:APA91b-_x", &mut Vec::new()).is_ok());
        for bad in ["", "has space", "é", &"a".repeat(MAX_BYTES + 1)] {
            assert_eq!(keep(bad, &mut Vec::new()), Err(INVALID_REGISTRATION));
        }
    }
}
