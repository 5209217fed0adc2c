//! Push Kit tokens: opaque text that the device's HMS Core issues; kept,
//! sent and shown as written. Huawei refuses a token with a stray space in
//! it ("illegal token"), so one is refused here, before it is queued.

/// The reason a refused token is listed with (Huawei's word).
pub const ILLEGAL_TOKEN: &str = "IllegalToken";

/// Longest token accepted (bytes); Huawei's are a few hundred.
pub const MAX_BYTES: usize = 4096;

/// Checks a token (non-empty printable ASCII, no whitespace, at most
/// [`MAX_BYTES`]) and appends it to `out`.
pub fn keep(token: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let ok = !token.is_empty()
        && token.len() <= MAX_BYTES
        && token.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ILLEGAL_TOKEN);
    }
    out.extend_from_slice(token.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_opaque_printable_ascii_without_spaces() {
        let mut out = Vec::new();
        assert!(keep("IQAAAACy0kYbAABSbO_x-1:a+b/c=", &mut out).is_ok());
        assert_eq!(out, b"IQAAAACy0kYbAABSbO_x-1:a+b/c=");
        for bad in ["", "token ", "tab\there", "é", &"a".repeat(MAX_BYTES + 1)] {
            assert_eq!(keep(bad, &mut Vec::new()), Err(ILLEGAL_TOKEN), "{bad:?}");
        }
    }
}
