//! When the store keeps every token it admitted (the disk default), memory
//! holds only a window of the queue: at most `limit` queued tokens, in parts
//! handed to their platforms. The rest wait in the store and are read back
//! in admission order as parts finish and give their room back.
//!
//! A part's room is a [`Lease`] its token list carries: it comes back the
//! moment the list's memory goes (when the platform drops its job), not when
//! its tokens are counted, so the bound is on memory, whatever a platform
//! holds on to. A job that fits is handed whole, as read from the request;
//! a larger one is handed in parts, the first one at once.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::floor::lock;
use crate::job::{JobId, JobProgress, Lease, TokenList};
use crate::platform::Handoff;
use crate::store::{Hand, Store};

/// Tokens read back from the store at a time, at most.
const PART: u64 = 8192;

/// How long a failed read back waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The window over a store's queue. Cheap to clone.
#[derive(Clone)]
pub struct Window(Arc<Shared>);

struct Shared {
    /// Tokens held in memory at most.
    limit: u64,
    /// Tokens held in memory now (lists not yet dropped).
    held: AtomicU64,
    /// Jobs (or what is left of them) waiting in the store, oldest first.
    parked: Mutex<VecDeque<Parked>>,
    /// Set by the drain: nothing more is read back.
    closed: std::sync::atomic::AtomicBool,
    /// Room came back, or a job was parked (or the window is gone).
    wake: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The feeder wakes, finds the window gone and ends.
        self.wake.notify_one();
    }
}

/// A job whose tokens wait in the store.
struct Parked {
    id: JobId,
    app: Arc<str>,
    fields: Arc<[u8]>,
    progress: Arc<JobProgress>,
    expires_at: Option<SystemTime>,
    /// Token ranges still to hand, in order.
    send: VecDeque<Range<u32>>,
}

impl Window {
    /// A window of `limit` tokens over `store`, read back into `hand`.
    pub fn start(limit: u64, store: Arc<dyn Store>, hand: Hand) -> Self {
        let window = Self(Arc::new(Shared {
            limit: limit.max(1),
            held: AtomicU64::new(0),
            parked: Mutex::new(VecDeque::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        }));
        if tokio::runtime::Handle::try_current().is_ok() {
            let wake = window.0.wake.clone();
            tokio::spawn(feed(Arc::downgrade(&window.0), wake, store, hand));
        }
        window
    }

    /// Takes a job (a fresh one, a stream's part, a recovered one whose
    /// tokens stayed in the store): returns what to hand to its platform
    /// now, holding its room, and parks the rest.
    pub fn offer(&self, mut handoff: Handoff) -> Option<Handoff> {
        let shared = &self.0;
        let mut parked = lock(&shared.parked);
        let loaded = !handoff.tokens.is_empty();
        let room = shared
            .limit
            .saturating_sub(shared.held.load(Ordering::Acquire));
        if loaded && parked.is_empty() && room > 0 {
            let held = handoff.tokens.len() as u64;
            if held <= room {
                handoff.tokens = self.hold(std::mem::take(&mut handoff.tokens));
                return Some(handoff);
            }
            // Too large for the room left: the first part now, the rest
            // read back from the store as room comes back.
            let mut send: VecDeque<Range<u32>> = std::mem::take(&mut handoff.send).into();
            let now = take_ranges(&mut send, room);
            if let Some(cover) = cover(&now) {
                let part = handoff.tokens.slice(cover);
                handoff.tokens = self.hold(part);
                handoff.send = now;
                parked.push_back(Parked::of(&handoff, send));
                drop(parked);
                shared.wake.notify_one();
                return Some(handoff);
            }
            handoff.send = send.into();
        }
        if handoff.send.is_empty() {
            return Some(handoff);
        }
        let send = std::mem::take(&mut handoff.send).into();
        parked.push_back(Parked::of(&handoff, send));
        drop(parked);
        shared.wake.notify_one();
        None
    }

    /// Stops reading back (the drain closed the platforms) and forgets
    /// what waits: it stays in the store for the next start. Returns how
    /// many tokens that is.
    pub fn close(&self) -> u64 {
        self.0.closed.store(true, Ordering::Release);
        let left = self.parked();
        lock(&self.0.parked).clear();
        left
    }

    /// Tokens in memory now, and the most it holds.
    pub fn held(&self) -> (u64, u64) {
        (self.0.held.load(Ordering::Acquire), self.0.limit)
    }

    /// Tokens waiting in the store for room.
    pub fn parked(&self) -> u64 {
        lock(&self.0.parked)
            .iter()
            .flat_map(|p| p.send.iter())
            .map(|r| u64::from(r.end - r.start))
            .sum()
    }

    /// `tokens`, holding their room until dropped.
    fn hold(&self, tokens: TokenList) -> TokenList {
        let n = tokens.len() as u64;
        self.0.held.fetch_add(n, Ordering::AcqRel);
        tokens.with_lease(lease(&self.0, n))
    }
}

impl Parked {
    fn of(handoff: &Handoff, send: VecDeque<Range<u32>>) -> Self {
        Self {
            id: handoff.id,
            app: handoff.app.clone(),
            fields: handoff.fields.clone(),
            progress: handoff.progress.clone(),
            expires_at: handoff.expires_at,
            send,
        }
    }

    /// The same job with no ranges.
    fn job(&self) -> Self {
        Self {
            id: self.id,
            app: self.app.clone(),
            fields: self.fields.clone(),
            progress: self.progress.clone(),
            expires_at: self.expires_at,
            send: VecDeque::new(),
        }
    }

    fn handoff(&self, tokens: TokenList, send: Vec<Range<u32>>) -> Handoff {
        Handoff {
            id: self.id,
            app: self.app.clone(),
            fields: self.fields.clone(),
            built: None,
            tokens,
            send,
            progress: self.progress.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// `n` tokens of the window's room, given back (and the feeder woken) when
/// the list holding it is dropped. Holds the window weakly: a list that
/// outlives the backend gives back to nothing.
fn lease(shared: &Arc<Shared>, n: u64) -> Lease {
    let shared = Arc::downgrade(shared);
    Lease::new(
        n,
        Box::new(move |n| {
            if let Some(shared) = shared.upgrade() {
                shared.held.fetch_sub(n, Ordering::AcqRel);
                shared.wake.notify_one();
            }
        }),
    )
}

/// Takes up to `n` tokens' worth of ranges off the front of `send`.
fn take_ranges(send: &mut VecDeque<Range<u32>>, n: u64) -> Vec<Range<u32>> {
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        let Some(front) = send.front_mut() else {
            break;
        };
        let len = u64::from(front.end - front.start);
        if len <= left {
            left -= len;
            out.extend(send.pop_front());
        } else {
            let cut = front.start + u32::try_from(left).unwrap_or(u32::MAX);
            out.push(front.start..cut);
            front.start = cut;
            left = 0;
        }
    }
    out
}

/// The range from the first range's start to the last one's end.
fn cover(ranges: &[Range<u32>]) -> Option<Range<u32>> {
    Some(ranges.first()?.start..ranges.last()?.end)
}

/// Reads parked tokens back from the store while there is room, in parts
/// of up to [`PART`]; sleeps until room comes back or a job is parked.
async fn feed(
    shared: std::sync::Weak<Shared>,
    wake: Arc<Notify>,
    store: Arc<dyn Store>,
    hand: Hand,
) {
    loop {
        wake.notified().await;
        loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let Some((next, ranges, cover)) = next_part(&shared) else {
                break;
            };
            let held = u64::from(cover.end - cover.start);
            match store.reload(next.id, cover.clone()).await {
                Ok(tokens) => {
                    let tokens = tokens.with_lease(lease(&shared, held));
                    hand.deliver(next.handoff(tokens, ranges));
                }
                Err(e) => {
                    shared.held.fetch_sub(held, Ordering::AcqRel);
                    tracing::warn!(job = %next.id, error = %e.detail(), "queued tokens could not be read back from the store; trying again");
                    put_back(&shared, next, ranges);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Puts ranges that could not be read back at the front again.
fn put_back(shared: &Shared, next: Parked, ranges: Vec<Range<u32>>) {
    let mut parked = lock(&shared.parked);
    match parked.front_mut() {
        Some(front) if front.id == next.id => {
            for r in ranges.into_iter().rev() {
                front.send.push_front(r);
            }
        }
        _ => parked.push_front(Parked {
            send: ranges.into(),
            ..next
        }),
    }
}

/// The next part to read back, its room taken: the front job's next ranges,
/// up to [`PART`] tokens or the room left. `None` when nothing is parked or
/// too little room is left (a part waits for a quarter of the window, or
/// for an empty one, so parts stay large).
fn next_part(shared: &Shared) -> Option<(Parked, Vec<Range<u32>>, Range<u32>)> {
    let mut parked = lock(&shared.parked);
    if shared.closed.load(Ordering::Acquire) {
        return None;
    }
    let held = shared.held.load(Ordering::Acquire);
    let room = shared.limit.saturating_sub(held);
    let want = PART.min(shared.limit);
    if parked.is_empty() || (held > 0 && room < want.min(shared.limit / 4).max(1)) {
        return None;
    }
    let front = parked.front_mut()?;
    let ranges = take_ranges(&mut front.send, want.min(room.max(1)));
    let cover = cover(&ranges)?;
    // The front job, taken whole when this was its last part.
    let template = if front.send.is_empty() {
        parked.pop_front()?
    } else {
        front.job()
    };
    shared
        .held
        .fetch_add(u64::from(cover.end - cover.start), Ordering::AcqRel);
    Some((template, ranges, cover))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_taken_off_the_front_and_cut_where_the_room_ends() {
        let mut send: VecDeque<Range<u32>> = vec![0..3, 5..10, 12..13].into();
        assert_eq!(take_ranges(&mut send, 5), vec![0..3, 5..7]);
        assert_eq!(send, VecDeque::from(vec![7..10, 12..13]));
        assert_eq!(take_ranges(&mut send, 100), vec![7..10, 12..13]);
        assert!(send.is_empty());
        assert_eq!(cover(&[2..4, 8..9]), Some(2..9));
    }
}
