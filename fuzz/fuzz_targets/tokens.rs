//! Token decoders: APNs hex (either case, any length) and FCM/GCM registration
//! tokens. A decode that fails leaves the buffer as it was; one that succeeds
//! round-trips through the hex encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::job::{check_registration_token, decode_hex_token, hex_encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut buf = vec![7u8; 3];
    match decode_hex_token(text, &mut buf) {
        Ok(n) => {
            assert_eq!(buf.len(), 3 + n);
            assert_eq!(hex_encode(&buf[3..]), text.to_ascii_lowercase());
        }
        Err(_) => assert_eq!(buf, [7, 7, 7]),
    }
    let _ = check_registration_token(text);
});
