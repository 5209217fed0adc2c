//! APNs device tokens as senders write them: hex, 16 to 100 bytes (Apple
//! documents tokens as variable length; the ones it issues today are 32
//! bytes, and were never shorter than 16). Kept as lower-case hex text, the
//! form `/3/device/<token>` takes, so nothing re-encodes it per attempt.

/// Apple's word for a token that is not one (the reason in `rejected`).
pub const BAD_DEVICE_TOKEN: &str = "BadDeviceToken";

/// Shortest APNs device token Apple issues or ever has (bytes).
pub const MIN_BYTES: usize = 16;
/// Longest APNs device token we accept (bytes).
pub const MAX_BYTES: usize = 100;

/// Checks a device token (either case) and appends its kept form, lower-case
/// hex, to `out`; on error `out` is left as it was. Allocation-free, so that
/// validating 100k tokens is a tight loop.
pub fn keep(text: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let hex = text.as_bytes();
    let ok = hex.len().is_multiple_of(2)
        && (2 * MIN_BYTES..=2 * MAX_BYTES).contains(&hex.len())
        && hex.iter().all(u8::is_ascii_hexdigit);
    if !ok {
        return Err(BAD_DEVICE_TOKEN);
    }
    out.extend(hex.iter().map(u8::to_ascii_lowercase));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_either_case_and_keeps_lower_case() {
        let mut kept = Vec::new();
        keep(&"AbCd".repeat(16), &mut kept).expect("valid");
        assert_eq!(kept, "abcd".repeat(16).as_bytes());
    }

    #[test]
    fn refuses_bad_shapes_and_leaves_the_buffer_alone() {
        for bad in [
            "",
            "abc",
            &"ab".repeat(15),                 // 15 bytes: too short
            &"ab".repeat(101),                // 101 bytes: too long
            &format!("{}0", "ab".repeat(16)), // odd length
            &"zz".repeat(16),                 // not hex
            &format!("{} ", "ab".repeat(16)),
        ] {
            let mut buf = vec![1, 2, 3];
            assert_eq!(keep(bad, &mut buf), Err(BAD_DEVICE_TOKEN), "{bad:?}");
            assert_eq!(buf, vec![1, 2, 3]);
        }
        assert!(keep(&"ab".repeat(16), &mut Vec::new()).is_ok());
        assert!(keep(&"ab".repeat(100), &mut Vec::new()).is_ok());
    }
}
