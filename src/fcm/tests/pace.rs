//! FCM v1 at its project's pace (`max_per_minute`), on a test clock.

use super::*;
use crate::pace;

/// Waits (real time, bounded) until every message the bucket let through
/// has reached the mock and the worker is waiting for the pace again, so
/// moving the test clock next cannot race a request still on its way.
async fn quiescent(mock: &MockHandle, bucket: &pace::Bucket) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = crate::mock::Ledger::get(&mock.ledger.requests);
        if bucket.blocked() && seen == bucket.granted() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not quiescent: mock saw {seen}, bucket granted {}",
            bucket.granted()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A v1 service on `config` paced by a bucket of `max_per_minute` on a clock
/// the test moves.
fn paced_service(
    config: &GoogleConfig,
    max_per_minute: u64,
) -> (
    GoogleService,
    Books,
    Arc<pace::ManualClock>,
    Arc<pace::Bucket>,
) {
    let clock = Arc::new(pace::ManualClock::default());
    let bucket = Arc::new(pace::Bucket::new(max_per_minute, clock.clone()));
    let recorder = recorder();
    let service = GoogleService::start_for(
        config,
        recorder.recorder.clone(),
        recorder.metrics.clone(),
        backoff(),
        "default",
        Some(bucket.clone() as Arc<dyn pace::Allowance>),
    )
    .expect("start v1");
    (service, recorder, clock, bucket)
}

/// `max_per_minute = 600` against the mock, in test-clock time: the worker
/// runs for real, the pacer's clock moves only in 10 ms steps taken once
/// every granted request has reached the mock. Over 20 s of that clock the
/// mock sees 200 ± 5% messages, however fast or slow the machine is.
/// The cluster's bucket (Redis) is tested in `pace::shared`,
/// `tests/redis_managed.rs` and `tests/cluster.rs`.
#[tokio::test]
async fn v1_holds_max_per_minute_over_20_s_of_test_clock() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let mut config = fcm_config(&mock, &base);
        if let GoogleConfig::Fcm(c) = &mut config {
            c.max_per_minute = 600;
            c.concurrency = 16;
        }
        let (service, recorder, clock, bucket) = paced_service(&config, 600);
        let tokens: Vec<String> = (0..260).map(|i| format!("device-paced-{i}")).collect();
        let job = submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        for _ in 0..2000 {
            quiescent(&mock, &bucket).await;
            clock.advance(Duration::from_millis(10));
        }
        quiescent(&mock, &bucket).await;
        let sent = crate::mock::Ledger::get(&mock.ledger.requests) as f64;
        assert!(
            (sent - 200.0).abs() <= 10.0,
            "{sent} messages in 20 s at 10/s"
        );
        // The rest ends as cancelled without spending the quota.
        job.progress.cancel();
        clock.advance(Duration::from_secs(1));
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.successes + c.cancelled, 260, "{c:?}");
        assert_eq!(c.successes, crate::mock::Ledger::get(&mock.ledger.requests));
        let paced = recorder
            .metrics
            .fcm_paced_seconds
            .with_label_values(&["default"])
            .get();
        assert!(paced > 15.0, "paced {paced} s of 20");
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

/// A 429 with `Retry-After: 2` pauses every send of the project for 2 s of
/// the pacer's clock, not only the throttled token.
#[tokio::test]
async fn v1_a_429_pauses_the_whole_project() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|o| {
            o.faults.throttle_every = Some(5);
            o.faults.retry_after_s = 2;
        })
        .await;
        let mut config = fcm_config(&mock, &base);
        if let GoogleConfig::Fcm(c) = &mut config {
            c.concurrency = 1;
        }
        let (service, recorder, clock, bucket) = paced_service(&config, 60_000);
        let tokens: Vec<String> = (0..8).map(|i| format!("device-pause-{i}")).collect();
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        // Requests 1-4 pass, the 5th is throttled: then nothing more goes.
        quiescent(&mock, &bucket).await;
        assert_eq!(crate::mock::Ledger::get(&mock.ledger.requests), 5);
        assert_eq!(pace::Allowance::available(&*bucket), 0.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        clock.advance(Duration::from_millis(1900));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            crate::mock::Ledger::get(&mock.ledger.requests),
            5,
            "a request went out during the pause"
        );
        // Once the pause is over, everything is delivered (the throttled
        // token on its retry).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            clock.advance(Duration::from_millis(500));
            let c = recorder.kept.counters();
            if c.pending == 0 {
                assert_eq!(c.successes, 8, "{c:?}");
                assert!(c.retries >= 1, "{c:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{c:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_delivered_once(&mock, &tokens);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}
