//! The APNs answer classifier: any status and body gives a verdict.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pushgate::apns::response::classify;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]);
    let retry_after = (data[2] & 1 == 1).then(|| Duration::from_secs(u64::from(data[2])));
    let _ = classify(status, &data[3..], retry_after);
    if let Ok(reason) = std::str::from_utf8(&data[3..]) {
        let _ = pushgate::apns::response::Reason::parse(reason);
    }
});
