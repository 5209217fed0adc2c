//! The JSON send bodies (APNs and Google): parse, build the message, take in
//! the tokens, as the send routes do before anything is queued.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::api::send::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::apns_json(data);
    fuzzing::google_json(data);
});
