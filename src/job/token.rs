//! Tokens as the middle sees them: one [`TokenCodec`] per platform decides,
//! once, how a token is kept (the bytes a job, a store and a worker hold),
//! shown (lists, webhook events, rejections) and carried between gateways;
//! and a [`TokenList`] keeps a job's tokens in one buffer.
//!
//! Validating what a sender wrote is the platform's business (its intake);
//! from then on every layer reads a token through its platform's codec, so
//! no two places can render one differently.

use std::borrow::Cow;
use std::sync::Arc;

/// How a platform keeps, shows and carries its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenCodec {
    /// Kept as the text that is sent and shown: APNs device tokens (as
    /// lower-case hex) and broadcast channel ids, FCM and HMS registration
    /// tokens, FCM topics and conditions.
    Text,
    /// A Web Push subscription: kept as its keys (p256dh, 65 bytes, then
    /// auth, 16 bytes) followed by its endpoint URL; shown as the endpoint
    /// alone (the keys are secrets of the browser); carried between
    /// gateways as the hex of the keys, then the endpoint.
    Subscription,
}

/// Bytes of a kept subscription's keys, before its endpoint.
pub const SUBSCRIPTION_KEYS: usize = 65 + 16;

impl TokenCodec {
    /// A kept token as the sender knows it (lists, webhook, logs). Borrows:
    /// no allocation unless the bytes are not UTF-8, which intake never keeps.
    /// A personalised token's own fields ([`crate::message::personal`]) are
    /// not shown.
    pub fn show(self, kept: &[u8]) -> Cow<'_, str> {
        let (token, _) = self.split(kept);
        match self {
            TokenCodec::Text => text(token),
            TokenCodec::Subscription => text(token.get(SUBSCRIPTION_KEYS..).unwrap_or_default()),
        }
    }

    /// A kept token without its personal trailer, and the trailer (the
    /// JSON text of a `POST /send` target's own fields) when it has one.
    pub fn split(self, kept: &[u8]) -> (&[u8], Option<&[u8]>) {
        let from = match self {
            TokenCodec::Text => 0,
            TokenCodec::Subscription => SUBSCRIPTION_KEYS.min(kept.len()),
        };
        crate::message::personal::split(kept, from)
    }

    /// A kept token as text that [`TokenCodec::keep_wire`] turns back into
    /// the same bytes: how a shared store (Redis) carries it, personal
    /// trailer included.
    pub fn wire(self, kept: &[u8]) -> Cow<'_, str> {
        match self {
            TokenCodec::Subscription if kept.len() > SUBSCRIPTION_KEYS => {
                let mut s = hex_encode(&kept[..SUBSCRIPTION_KEYS]);
                s.push_str(&String::from_utf8_lossy(&kept[SUBSCRIPTION_KEYS..]));
                Cow::Owned(s)
            }
            TokenCodec::Subscription => self.show(kept),
            TokenCodec::Text => text(kept),
        }
    }

    /// The inverse of [`TokenCodec::wire`]: appends the kept form to `out`.
    /// Text that is not a wire form (written by hand, or damaged) is kept
    /// as it is, and fails at its upstream like any other bad token.
    pub fn keep_wire(self, wire: &str, out: &mut Vec<u8>) {
        if self == TokenCodec::Subscription
            && let Some(keys) = wire.get(..2 * SUBSCRIPTION_KEYS)
            && decode_hex(keys, out).is_some()
        {
            out.extend_from_slice(&wire.as_bytes()[2 * SUBSCRIPTION_KEYS..]);
            return;
        }
        out.extend_from_slice(wire.as_bytes());
    }
}

/// Kept bytes as text: borrowed when they are UTF-8, which intake ensures
/// (`str::from_utf8`'s ASCII fast path, where the lossy decoder walked every
/// token in chunks: 2% of the APNs send path's CPU), else lossy.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Appends the bytes of even-length hex `text` (either case) to `out`;
/// `None` (and `out` untouched) when it is not hex.
pub fn decode_hex(text: &str, out: &mut Vec<u8>) -> Option<usize> {
    let hex = text.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let start = out.len();
    for pair in hex.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
            _ => {
                out.truncate(start);
                return None;
            }
        }
    }
    Some(hex.len() / 2)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// A job's tokens in one contiguous buffer: no allocation per token, so a
/// million queued tokens cost their bytes plus four bytes of offset each.
///
/// A list may hold a part of a job (a streamed job arrives in parts): its
/// first token is then token `base` of the job, and every index it takes and
/// gives is the job's, so outcomes, leases and request ids need no
/// translation.
#[derive(Debug, Default, Clone)]
pub struct TokenList {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    base: u32,
    /// The share of a memory budget these tokens hold, given back when the
    /// last clone of the list is dropped (see [`Lease`]).
    lease: Option<Arc<Lease>>,
}

/// A share of a bounded budget (tokens held in memory), given back when
/// dropped: a list that carries one returns it the moment its memory goes,
/// however long its job's workers held it.
pub struct Lease {
    n: u64,
    give_back: Box<dyn Fn(u64) + Send + Sync>,
}

impl Lease {
    /// `n` of a budget that `give_back(n)` returns.
    pub fn new(n: u64, give_back: Box<dyn Fn(u64) + Send + Sync>) -> Self {
        Self { n, give_back }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        (self.give_back)(self.n);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("n", &self.n).finish()
    }
}

impl TokenList {
    /// An empty list with room for `tokens` tokens of about `bytes_each` bytes.
    pub fn with_capacity(tokens: usize, bytes_each: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(tokens * bytes_each),
            ends: Vec::with_capacity(tokens),
            base: 0,
            lease: None,
        }
    }

    /// Appends a token's bytes.
    pub fn push(&mut self, token: &[u8]) {
        self.bytes.extend_from_slice(token);
        self.commit();
    }

    /// Exposes the byte buffer so a decoder can write a token in place; call
    /// [`TokenList::commit`] after a successful write.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Marks everything written to the buffer since the last token as one token.
    pub fn commit(&mut self) {
        // Jobs are bounded by the body limit, far below 4 GiB of tokens.
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// Bytes written to the buffer since the last committed token.
    pub fn uncommitted(&self) -> &[u8] {
        let start = self.ends.last().map_or(0, |&e| e as usize);
        &self.bytes[start..]
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The same tokens as a part of a job starting at the job's token `base`.
    pub fn with_base(mut self, base: u32) -> Self {
        self.base = base;
        self
    }

    /// The same tokens, holding `lease` until the list (and every clone of
    /// it) is dropped.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(Arc::new(lease));
        self
    }

    /// A copy of the job's tokens `range` (within [`TokenList::range`]) as
    /// a list of its own, based at `range.start`.
    pub fn slice(&self, range: std::ops::Range<u32>) -> Self {
        let (from, bytes, ends) = self.slice_parts(range.clone());
        Self {
            bytes: bytes.to_vec(),
            ends: ends.iter().map(|&e| e - from).collect(),
            base: range.start.max(self.base),
            lease: None,
        }
    }

    /// The job's tokens `range` without copying: the offset of their first
    /// byte in this list's buffer, their bytes, and their end offsets (into
    /// this list's buffer).
    pub fn slice_parts(&self, range: std::ops::Range<u32>) -> (u32, &[u8], &[u32]) {
        let last = (range.end.saturating_sub(self.base) as usize).min(self.ends.len());
        let first = (range.start.saturating_sub(self.base) as usize).min(last);
        let start = if first == 0 { 0 } else { self.ends[first - 1] };
        let end = if last == 0 { 0 } else { self.ends[last - 1] }.max(start);
        (
            start,
            &self.bytes[start as usize..end as usize],
            &self.ends[first..last],
        )
    }

    /// The job's index of this list's first token.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The job's indices of this list's tokens.
    pub fn range(&self) -> std::ops::Range<u32> {
        let len = u32::try_from(self.len()).unwrap_or(u32::MAX);
        self.base..self.base.saturating_add(len)
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of the job's token `index` (in [`TokenList::range`]).
    pub fn get(&self, index: u32) -> &[u8] {
        let i = index.saturating_sub(self.base) as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// The buffer and the end offset of each token, for a store to write.
    pub fn as_parts(&self) -> (&[u8], &[u32]) {
        (&self.bytes, &self.ends)
    }

    /// A list from [`TokenList::as_parts`]'s pieces; `None` when the ends
    /// do not describe `bytes` (out of order, past its end).
    pub fn from_parts(bytes: Vec<u8>, ends: Vec<u32>) -> Option<Self> {
        let mut last = 0u32;
        for &e in &ends {
            if e < last || e as usize > bytes.len() {
                return None;
            }
            last = e;
        }
        Some(Self {
            bytes,
            ends,
            base: 0,
            lease: None,
        })
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_personal_trailer_is_not_shown_but_is_carried_between_gateways() {
        for (codec, token) in [
            (TokenCodec::Text, b"device-token".to_vec()),
            (TokenCodec::Subscription, {
                // Binary keys may hold a NUL; only one after them marks a trailer.
                let mut kept = vec![0u8; SUBSCRIPTION_KEYS];
                kept.extend_from_slice(b"https://push.example/x");
                kept
            }),
        ] {
            let mut kept = token.clone();
            kept.push(crate::message::personal::MARK);
            kept.extend_from_slice(br#"{"badge":3}"#);
            assert_eq!(
                codec.split(&kept),
                (&token[..], Some(&br#"{"badge":3}"#[..]))
            );
            assert_eq!(codec.show(&kept), codec.show(&token));
            let mut back = Vec::new();
            codec.keep_wire(&codec.wire(&kept), &mut back);
            assert_eq!(back, kept, "{codec:?}");
            assert_eq!(codec.split(&token), (&token[..], None));
        }
    }

    #[test]
    fn a_slice_is_the_job_s_tokens_in_its_range_and_a_lease_returns_once_dropped() {
        let mut list = TokenList::default();
        for t in ["a", "bb", "ccc", "dddd", "eeeee"] {
            list.push(t.as_bytes());
        }
        let list = list.with_base(10);
        let part = list.slice(11..14);
        assert_eq!(part.range(), 11..14);
        assert_eq!(
            [part.get(11), part.get(12), part.get(13)],
            [&b"bb"[..], b"ccc", b"dddd"]
        );
        let of_part = part.slice(13..20);
        assert_eq!(of_part.range(), 13..14);
        assert_eq!(of_part.get(13), b"dddd");
        let back = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = back.clone();
        let held = part.with_lease(Lease::new(
            3,
            Box::new(move |n| {
                seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }),
        ));
        let clone = held.clone();
        drop(held);
        assert_eq!(back.load(std::sync::atomic::Ordering::Relaxed), 0);
        drop(clone);
        assert_eq!(back.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[test]
    fn text_is_kept_shown_and_carried_as_itself() {
        let c = TokenCodec::Text;
        assert_eq!(c.show(b"abc:APA91b"), "abc:APA91b");
        assert_eq!(c.wire(b"dHN0LXNyY2g="), "dHN0LXNyY2g=");
        let mut back = Vec::new();
        // A channel id of any length stays its own text.
        c.keep_wire("c2hvcnQ=", &mut back);
        assert_eq!(back, b"c2hvcnQ=");
    }

    #[test]
    fn subscriptions_show_their_endpoint_and_travel_with_their_keys() {
        let mut kept: Vec<u8> = (0..81u8).collect();
        kept.extend_from_slice(b"https://push.example.com/s/1");
        let c = TokenCodec::Subscription;
        assert_eq!(c.show(&kept), "https://push.example.com/s/1");
        let wire = c.wire(&kept);
        assert!(wire.ends_with("https://push.example.com/s/1") && wire.len() == 162 + 28);
        let mut back = Vec::new();
        c.keep_wire(&wire, &mut back);
        assert_eq!(back, kept);
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let mut out = vec![9];
        assert_eq!(decode_hex("0aFF", &mut out), Some(2));
        assert_eq!(out, vec![9, 0x0a, 0xff]);
        assert_eq!(hex_encode(&out[1..]), "0aff");
        assert_eq!(decode_hex("0g", &mut out), None);
        assert_eq!(decode_hex("abc", &mut out), None);
        assert_eq!(out, vec![9, 0x0a, 0xff]);
    }

    #[test]
    fn a_part_of_a_job_takes_and_gives_the_jobs_indices() {
        let mut part = TokenList::default();
        part.push(b"a");
        part.push(b"b");
        let part = part.with_base(10);
        assert_eq!(part.range(), 10..12);
        assert_eq!(part.get(11), b"b");
    }

    #[test]
    fn token_list_stores_tokens_contiguously() {
        let mut list = TokenList::default();
        list.push(b"one");
        list.push(b"three");
        assert_eq!(list.len(), 2);
        assert_eq!(list.get(0), b"one");
        assert_eq!(list.get(1), b"three");
    }
}
