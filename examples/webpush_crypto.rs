//! What one Web Push message costs in crypto, on one core: `bench/run` runs
//! this beside the end-to-end figures to say what bounds the rate.
//!
//!     cargo run --release --example webpush_crypto -- [messages]
//!
//! Prints one JSON object: microseconds per operation.

use std::time::Instant;

use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use pushgate::webpush::ece::{self, UaKeys};
use pushgate::webpush::vapid::{Vapid, VapidKey};

fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let ua = PrivateKey::generate(&ECDH_P256).expect("key");
    let ua_public = ua.compute_public_key().expect("public");
    let keys = UaKeys::new(ua_public.as_ref(), &[7u8; 16]).expect("keys");
    let payload = br#"{"title":"pushgate bench","body":"Hello from the benchmark"}"#;

    let encrypt = per_op(n, || {
        std::hint::black_box(ece::encrypt(payload, &keys).expect("encrypts"));
    });
    let keygen = per_op(n, || {
        let k = PrivateKey::generate(&ECDH_P256).expect("key");
        std::hint::black_box(k.compute_public_key().expect("public"));
    });
    let fixed = PrivateKey::generate(&ECDH_P256).expect("key");
    let ecdh = per_op(n, || {
        let secret = agreement::agree(
            &fixed,
            UnparsedPublicKey::new(&ECDH_P256, ua_public.as_ref()),
            (),
            |s| Ok(s[0]),
        );
        std::hint::black_box(secret.expect("agree"));
    });
    let vapid = Vapid::new(VapidKey::generate().expect("key"), "mailto:b@example.com").expect("v");
    let cached = per_op(n, || {
        std::hint::black_box(
            vapid
                .authorization("https://push.example.com")
                .expect("jwt"),
        );
    });
    let signed = per_op(n.min(5_000), || {
        vapid.forget("https://push.example.com");
        std::hint::black_box(
            vapid
                .authorization("https://push.example.com")
                .expect("jwt"),
        );
    });
    println!(
        "{{\"messages\": {n}, \"encrypt_us\": {encrypt:.2}, \"ephemeral_keygen_us\": {keygen:.2}, \"ecdh_us\": {ecdh:.2}, \"rest_of_encrypt_us\": {:.2}, \"vapid_cached_us\": {cached:.3}, \"vapid_sign_us\": {signed:.2}, \"encrypt_bound_msgs_per_core_s\": {:.0}}}",
        (encrypt - keygen - ecdh).max(0.0),
        1e6 / encrypt
    );
}
