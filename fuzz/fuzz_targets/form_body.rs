//! The form send body (GoCM's `application/x-www-form-urlencoded`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::api::send::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::form(data);
});
