//! Token checks: APNs hex device tokens (either case) and FCM/GCM
//! registration tokens. A check that fails leaves the buffer as it was; one
//! that succeeds keeps the token as lower-case hex that decodes back to the
//! same bytes as the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::job::{decode_hex, hex_encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut buf = vec![7u8; 3];
    match pushgate::apns::token::keep(text, &mut buf) {
        Ok(()) => {
            let kept = std::str::from_utf8(&buf[3..]).expect("hex is ASCII");
            assert_eq!(kept, text.to_ascii_lowercase());
            let mut bytes = Vec::new();
            let n = decode_hex(kept, &mut bytes).expect("kept form is hex");
            assert_eq!(hex_encode(&bytes[..n]), kept);
        }
        Err(_) => assert_eq!(buf, [7, 7, 7]),
    }
    let mut buf = vec![7u8; 3];
    if pushgate::fcm::token::keep(text, &mut buf).is_err() {
        assert_eq!(buf, [7, 7, 7]);
    }
});
