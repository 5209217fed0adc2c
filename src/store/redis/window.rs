//! How many chunks one gateway of the `redis` backend holds at once, sized
//! from measured round trips instead of a constant.
//!
//! Chunks are sent one after another (the dispatch queue is FIFO), so while
//! one chunk's last outcome travels to Redis and a replacement is read, the
//! upstream must have the other held chunks to work on. With
//! - `S`, the time to send one chunk (first outcome to last outcome),
//! - `O`, the Redis round trips around each chunk: its ack (last outcome to
//!   ack written, including any wait for the flush in progress) plus one
//!   XREADGROUP,
//!
//! the window is `2 + ceil(O / S)`: one chunk in service, one ready behind
//! it, and enough more to cover the round trips. Clamped to
//! [`MIN_WINDOW`]..=[`MAX_WINDOW`]; the maximum is what bounds the tokens a
//! `kill -9` can resend (`MAX_WINDOW` × chunk size).

use std::time::Duration;

/// Fewest chunks held (today's constant: covers the upstream's pipeline).
pub const MIN_WINDOW: usize = 4;
/// Most chunks held: bounds what a crash can resend.
pub const MAX_WINDOW: usize = 16;

/// An exponentially weighted moving average of durations, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma(Option<f64>);

impl Ewma {
    const WEIGHT: f64 = 0.2;

    fn record(&mut self, d: Duration) {
        let x = d.as_secs_f64() * 1e6;
        self.0 = Some(match self.0 {
            None => x,
            Some(avg) => avg + Self::WEIGHT * (x - avg),
        });
    }

    fn get(self) -> Option<f64> {
        self.0
    }
}

/// The measurements and the window they give.
#[derive(Debug, Clone, Default)]
pub struct Window {
    read: Ewma,
    ack: Ewma,
    service: Ewma,
}

impl Window {
    /// One XREADGROUP that returned a chunk took `d`.
    pub fn read(&mut self, d: Duration) {
        self.read.record(d);
    }

    /// A chunk was sent in `service` and acked `ack` after its last outcome.
    pub fn chunk(&mut self, service: Duration, ack: Duration) {
        self.service.record(service);
        self.ack.record(ack);
    }

    /// The round trips per chunk (`O`), if measured.
    pub fn overhead(&self) -> Option<Duration> {
        let o = self.ack.get()? + self.read.get().unwrap_or(0.0);
        Some(Duration::from_secs_f64(o / 1e6))
    }

    /// The time to send one chunk (`S`), if measured.
    pub fn service(&self) -> Option<Duration> {
        self.service.get().map(|s| Duration::from_secs_f64(s / 1e6))
    }

    /// Chunks to hold: `2 + ceil(O / S)`, clamped.
    pub fn size(&self) -> usize {
        let (Some(o), Some(s)) = (self.overhead(), self.service.get()) else {
            return MIN_WINDOW;
        };
        let s = s.max(1.0);
        let extra = (o.as_secs_f64() * 1e6 / s).ceil();
        let n = if extra.is_finite() {
            2usize.saturating_add(extra as usize)
        } else {
            MAX_WINDOW
        };
        n.clamp(MIN_WINDOW, MAX_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unmeasured_is_the_minimum() {
        assert_eq!(Window::default().size(), MIN_WINDOW);
    }

    #[test]
    fn slow_round_trips_against_fast_chunks_widen_it_up_to_the_maximum() {
        let mut w = Window::default();
        for _ in 0..50 {
            w.read(ms(1));
            // 8 ms to send a chunk, 30 ms until its ack: 2 + ceil(31 / 8) = 6.
            w.chunk(ms(8), ms(30));
        }
        assert_eq!(w.size(), 6);
        for _ in 0..50 {
            // A remote Redis (100 ms away) against a fast upstream: capped.
            w.chunk(ms(2), ms(100));
        }
        assert_eq!(w.size(), MAX_WINDOW);
        for _ in 0..50 {
            // Slow upstream, quick Redis: the minimum suffices.
            w.read(ms(0));
            w.chunk(ms(200), ms(2));
        }
        assert_eq!(w.size(), MIN_WINDOW);
    }
}
