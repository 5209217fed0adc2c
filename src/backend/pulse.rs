//! The gateway's pulse: every [`SAMPLE_EVERY`] a small task samples each
//! registered platform's totals into a ring of [`WINDOW`] (the status
//! page's tokens/s chart has its history from the first load), and every
//! [`SUMMARY_EVERY`] it logs one summary line at info: tokens/s per
//! platform, the outcomes of the minute, queue depth, pending tokens and
//! upstream connections. A minute with nothing finished and nothing pending
//! logs nothing.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use crate::books::{Counter, Counters};
use crate::floor::{lock, now_ms};
use crate::job::{Family, OutcomeKind};

use super::Inner;

/// How often the totals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How far back the ring reaches.
pub const WINDOW: Duration = Duration::from_secs(600);
/// How often the summary line is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Samples kept: the window's, plus the one its first rate starts from.
const SAMPLES: usize = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 1;

/// One sample: when, and each registered platform's family totals (all apps).
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    totals: Vec<(Family, Counters)>,
}

/// The ring of samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

/// The tokens/s of each platform between successive samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// The end of each interval, ms since the epoch, oldest first.
    pub time_ms: Vec<u64>,
    /// Per family: its tokens/s over each interval.
    pub tokens_per_s: Vec<(Family, Vec<f64>)>,
}

impl History {
    fn record(&self, sample: Sample) {
        let mut samples = lock(&self.samples);
        if samples.len() >= SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The finished tokens per second of each family between successive
    /// samples, over the window.
    pub fn rates(&self) -> Rates {
        let samples = lock(&self.samples);
        let mut time_ms = Vec::new();
        let mut tokens_per_s: Vec<(Family, Vec<f64>)> = samples
            .back()
            .map(|s| s.totals.iter().map(|(f, _)| (*f, Vec::new())).collect())
            .unwrap_or_default();
        for (before, after) in samples.iter().zip(samples.iter().skip(1)) {
            let secs = after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0;
            if secs <= 0.0 {
                continue;
            }
            time_ms.push(after.at_ms);
            for (family, rates) in &mut tokens_per_s {
                let finished = |s: &Sample| {
                    s.totals
                        .iter()
                        .find(|(f, _)| f == family)
                        .map_or(0, |(_, c)| c.finished())
                };
                let delta = finished(after).saturating_sub(finished(before));
                rates.push((delta as f64 / secs * 10.0).round() / 10.0);
            }
        }
        Rates {
            time_ms,
            tokens_per_s,
        }
    }

    /// The newest sample and the one `back` before it (or the oldest).
    fn span(&self, back: usize) -> Option<(Sample, Sample)> {
        let samples = lock(&self.samples);
        let newest = samples.back()?.clone();
        let from = samples.len().saturating_sub(back + 1);
        Some((samples.get(from)?.clone(), newest))
    }
}

/// Samples until the backend is gone: every [`SAMPLE_EVERY`], and a summary
/// every [`SUMMARY_EVERY`].
pub(super) async fn run(backend: Weak<Inner>) {
    let per_summary = (SUMMARY_EVERY.as_secs() / SAMPLE_EVERY.as_secs()).max(1) as usize;
    let mut ticks = 0usize;
    loop {
        {
            let Some(inner) = backend.upgrade() else {
                return;
            };
            inner.history.record(sample(&inner));
            if ticks > 0 && ticks.is_multiple_of(per_summary) {
                summarize(&inner, per_summary);
            }
        }
        ticks += 1;
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

fn sample(inner: &Inner) -> Sample {
    Sample {
        at_ms: now_ms(),
        totals: inner
            .hand
            .registry
            .platforms()
            .map(|r| {
                let family = r.platform.family();
                (family, inner.reports.family_total(family))
            })
            .collect(),
    }
}

/// One platform's minute, as the summary line shows it.
#[derive(Debug, Clone, PartialEq)]
struct PlatformMinute {
    name: String,
    /// What changed in its totals over the minute.
    delta: Counters,
    queue_depth: usize,
    connections: Option<usize>,
}

/// The summary line's per-platform text (`apns 120.0/s success 7200
/// failed 12 queue 0 conns 2; …`), and the minute's totals over all of them.
fn summary_text(minutes: &[PlatformMinute], secs: f64) -> (String, Counters) {
    let mut total = Counters::default();
    let mut text = String::new();
    for m in minutes {
        total.add_all(&m.delta);
        if !text.is_empty() {
            text.push_str("; ");
        }
        let _ = write!(text, "{} {:.1}/s", m.name, m.delta.finished() as f64 / secs);
        for kind in OutcomeKind::ALL {
            let n = m.delta.get(Counter::of(kind));
            if n > 0 {
                let _ = write!(text, " {} {n}", kind.as_str());
            }
        }
        let _ = write!(text, " queue {}", m.queue_depth);
        if let Some(c) = m.connections {
            let _ = write!(text, " conns {c}");
        }
    }
    (text, total)
}

/// Logs the summary of the last `back` samples, unless nothing happened.
fn summarize(inner: &Inner, back: usize) {
    let Some((before, after)) = history_span(inner, back) else {
        return;
    };
    let secs = (after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0).max(1e-3);
    let pending = inner.admission.pending();
    let minutes: Vec<PlatformMinute> = inner
        .hand
        .registry
        .platforms()
        .map(|registered| {
            let family = registered.platform.family();
            let of = |s: &Sample| {
                s.totals
                    .iter()
                    .find(|(f, _)| *f == family)
                    .map(|(_, c)| *c)
                    .unwrap_or_default()
            };
            PlatformMinute {
                name: registered.platform.as_str().to_owned(),
                delta: difference(&of(&after), &of(&before)),
                queue_depth: registered.apps.values().map(|d| d.queue_depth()).sum(),
                connections: registered.front.status().connections,
            }
        })
        .collect();
    let (platforms, minute) = summary_text(&minutes, secs);
    if minute.finished() == 0 && minute.accepted == 0 && pending == 0 {
        return;
    }
    tracing::info!(
        tokens_per_s = (minute.finished() as f64 / secs * 10.0).round() / 10.0,
        accepted = minute.accepted,
        successes = minute.successes,
        failures = minute.failures,
        unregistered = minute.unregistered,
        canonicals = minute.canonicals,
        expired = minute.expired,
        cancelled = minute.cancelled,
        retries = minute.retries,
        pending,
        queue_depth = minutes.iter().map(|m| m.queue_depth).sum::<usize>(),
        connections = minutes.iter().filter_map(|m| m.connections).sum::<usize>(),
        window_s = secs.round(),
        platforms = %platforms,
        "summary"
    );
}

fn history_span(inner: &Inner, back: usize) -> Option<(Sample, Sample)> {
    inner.history.span(back)
}

/// `after − before`, counter by counter.
fn difference(after: &Counters, before: &Counters) -> Counters {
    Counters::from_fn(|c| after.get(c).saturating_sub(before.get(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::test::FAMILY;

    fn at(ms: u64, finished: u64) -> Sample {
        Sample {
            at_ms: ms,
            totals: vec![(
                FAMILY,
                Counters {
                    accepted: finished,
                    successes: finished,
                    ..Counters::default()
                },
            )],
        }
    }

    #[test]
    fn rates_are_tokens_per_second_between_samples_over_a_bounded_window() {
        let history = History::default();
        assert!(history.rates().time_ms.is_empty());
        history.record(at(1_000, 0));
        history.record(at(6_000, 500));
        history.record(at(11_000, 500));
        let rates = history.rates();
        assert_eq!(rates.time_ms, vec![6_000, 11_000]);
        assert_eq!(rates.tokens_per_s, vec![(FAMILY, vec![100.0, 0.0])]);
        for i in 0..SAMPLES as u64 * 2 {
            history.record(at(20_000 + i * 5_000, i));
        }
        let rates = history.rates();
        assert_eq!(rates.time_ms.len(), SAMPLES - 1);
        assert_eq!(rates.tokens_per_s[0].1.last(), Some(&0.2));
    }

    #[test]
    fn the_summary_names_each_platform_its_rate_outcomes_queue_and_connections() {
        let minute = |successes, failures| Counters {
            accepted: successes + failures,
            successes,
            failures,
            ..Counters::default()
        };
        let (text, total) = summary_text(
            &[
                PlatformMinute {
                    name: "apns".into(),
                    delta: minute(600, 6),
                    queue_depth: 12,
                    connections: Some(2),
                },
                PlatformMinute {
                    name: "webpush".into(),
                    delta: minute(0, 0),
                    queue_depth: 0,
                    connections: None,
                },
            ],
            60.0,
        );
        assert_eq!(
            text,
            "apns 10.1/s success 600 failed 6 queue 12 conns 2; webpush 0.0/s queue 0"
        );
        assert_eq!(
            (total.successes, total.failures, total.accepted),
            (600, 6, 606)
        );
    }
}
