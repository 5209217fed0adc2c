//! The disk store's row formats: little-endian, length-prefixed, a version
//! byte first. redb checksums every page, so a row that decodes at all is
//! the row that was written; a row that does not (another version) is
//! skipped with a log line rather than stopping the gateway.

use crate::books::{Counter, Counters};
use crate::job::TokenList;

/// Format version of every row.
const VERSION: u8 = 1;
/// Format version of a job record: 2 keeps APNs tokens as their hex text.
/// Version 1 kept them as bytes; such rows (left by an older gateway) are
/// read and turned into text, so an upgrade resends what was queued.
const RECORD_VERSION: u8 = 2;

/// Appends fixed-width integers and length-prefixed bytes.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads what [`Writer`] wrote; every read is `None` past the end.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        self.bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
    }
}

fn opt(v: Option<u64>) -> u64 {
    v.map_or(u64::MAX, |v| v.min(u64::MAX - 1))
}

fn unopt(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

/// A job as admitted: written once, deleted when its last token finishes.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Its platform's name.
    pub platform: String,
    /// The app.
    pub app: String,
    /// The message in its platform's stored form.
    pub fields: Vec<u8>,
    /// Nothing is sent after this (ms since the epoch).
    pub expires_at_ms: Option<u64>,
    /// Held until this (ms since the epoch), for `send_at`.
    pub due_ms: Option<u64>,
    /// The tokens (stored form).
    pub tokens: TokenList,
}

impl JobRecord {
    /// The row.
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(
            &self.platform,
            &self.app,
            &self.fields,
            self.expires_at_ms,
            self.due_ms,
            &self.tokens,
        )
    }

    /// The row of a job given by its parts (no copy of the tokens first).
    pub fn encode_parts(
        platform: &str,
        app: &str,
        fields: &[u8],
        expires_at_ms: Option<u64>,
        due_ms: Option<u64>,
        tokens: &TokenList,
    ) -> Vec<u8> {
        let (bytes, ends) = tokens.as_parts();
        let mut w = Writer(Vec::with_capacity(
            64 + fields.len() + bytes.len() + ends.len() * 4,
        ));
        w.u8(RECORD_VERSION)
            .bytes(platform.as_bytes())
            .bytes(app.as_bytes())
            .bytes(fields)
            .u64(opt(expires_at_ms))
            .u64(opt(due_ms))
            .bytes(bytes)
            .u32(u32::try_from(ends.len()).unwrap_or(u32::MAX));
        for &e in ends {
            w.u32(e);
        }
        w.0
    }

    /// Reads a row; `None` when it is not one.
    pub fn decode(row: &[u8]) -> Option<Self> {
        let mut r = Reader(row);
        let version = r.u8()?;
        if version != RECORD_VERSION && version != 1 {
            return None;
        }
        let platform = r.string()?;
        let app = r.string()?;
        let fields = r.bytes()?.to_vec();
        let expires_at_ms = unopt(r.u64()?);
        let due_ms = unopt(r.u64()?);
        let bytes = r.bytes()?.to_vec();
        let n = r.u32()? as usize;
        let mut ends = Vec::with_capacity(n.min(row.len() / 4));
        for _ in 0..n {
            ends.push(r.u32()?);
        }
        let mut tokens = TokenList::from_parts(bytes, ends)?;
        if version == 1 && platform == "apns" {
            tokens = hex_tokens(&tokens);
        }
        Some(Self {
            platform,
            app,
            fields,
            expires_at_ms,
            due_ms,
            tokens,
        })
    }
}

/// A version-1 APNs record's tokens (bytes) as they are kept now (hex text).
fn hex_tokens(bytes: &TokenList) -> TokenList {
    let mut text = TokenList::with_capacity(bytes.len(), 64);
    for i in 0..bytes.len() {
        let token = bytes.get(u32::try_from(i).unwrap_or(u32::MAX));
        text.buffer()
            .extend_from_slice(crate::job::hex_encode(token).as_bytes());
        text.commit();
    }
    text
}

/// A job's progress: rewritten when its outcomes are flushed; kept (without
/// the bitmap) after it finishes, for `GET /jobs/{id}`, until `max_jobs`
/// newer jobs have finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// Admission order (for forgetting the oldest finished jobs first).
    pub seq: u64,
    /// Its platform's name.
    pub platform: String,
    /// The app.
    pub app: String,
    /// Tokens accepted.
    pub total: u64,
    /// Outcome counts, in `OutcomeKind::ALL` order.
    pub counts: [u64; 6],
    /// Cancelled by the sender.
    pub cancelled: bool,
    /// A streamed job still receiving tokens (its parts are rows of
    /// `TOKENS`); never finished while open.
    pub open: bool,
    /// A streamed job whose stream was cut before its end.
    pub truncated: bool,
    /// Tokens below this index may have been handed to a worker.
    pub lease: u32,
    /// One bit per token with a persisted outcome; empty once finished.
    pub bits: Vec<u64>,
    /// The sender's correlation id (gorush `notif_id`). Written after the
    /// bitmap only when given, so rows without one read as before.
    pub notif_id: Option<String>,
}

impl JobState {
    /// Tokens with an outcome.
    pub fn done(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// True once every token has an outcome and no more can come.
    pub fn finished(&self) -> bool {
        !self.open && self.done() >= self.total
    }

    /// Whether token `index` has a persisted outcome.
    pub fn is_set(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Marks token `index` done; false if it already was.
    pub fn set(&mut self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let was = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        !was
    }

    /// The token ranges without an outcome.
    pub fn unfinished(&self) -> Vec<std::ops::Range<u32>> {
        let total = u32::try_from(self.total).unwrap_or(u32::MAX);
        let mut out: Vec<std::ops::Range<u32>> = Vec::new();
        for i in 0..total {
            if !self.is_set(i) {
                match out.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => out.push(i..i + 1),
                }
            }
        }
        out
    }

    /// The row.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(96 + self.bits.len() * 8));
        w.u8(VERSION)
            .u64(self.seq)
            .bytes(self.platform.as_bytes())
            .bytes(self.app.as_bytes())
            .u64(self.total);
        for c in self.counts {
            w.u64(c);
        }
        // One byte of flags; a row of an older gateway has 0 or 1 (cancelled).
        let flags =
            u8::from(self.cancelled) | u8::from(self.open) << 1 | u8::from(self.truncated) << 2;
        w.u8(flags)
            .u32(self.lease)
            .u32(u32::try_from(self.bits.len()).unwrap_or(u32::MAX));
        for &b in &self.bits {
            w.u64(b);
        }
        if let Some(n) = &self.notif_id {
            w.bytes(n.as_bytes());
        }
        w.0
    }

    /// Reads a row; `None` when it is not one.
    pub fn decode(row: &[u8]) -> Option<Self> {
        let mut r = Reader(row);
        if r.u8()? != VERSION {
            return None;
        }
        let seq = r.u64()?;
        let platform = r.string()?;
        let app = r.string()?;
        let total = r.u64()?;
        let mut counts = [0u64; 6];
        for c in &mut counts {
            *c = r.u64()?;
        }
        let flags = r.u8()?;
        let (cancelled, open, truncated) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        let lease = r.u32()?;
        let n = r.u32()? as usize;
        let mut bits = Vec::with_capacity(n.min(row.len() / 8));
        for _ in 0..n {
            bits.push(r.u64()?);
        }
        let notif_id = if r.0.is_empty() {
            None
        } else {
            Some(r.string()?)
        };
        Some(Self {
            seq,
            platform,
            app,
            total,
            counts,
            cancelled,
            open,
            truncated,
            lease,
            bits,
            notif_id,
        })
    }
}

/// Bytes of a `TOKENS` row at most (one longer token may pass it): just
/// under 256 KiB, because redb keeps a large value in a run of pages sized
/// to a power of two, and a row just over one would take twice its size.
pub const ROW_BYTES: usize = 256 * 1024 - 2048;

/// A job's tokens (or a stream's part of them) as `TOKENS` rows of about
/// [`ROW_BYTES`]: (the job's index of the row's first token, the row).
pub fn token_rows(tokens: &TokenList) -> Vec<(u32, Vec<u8>)> {
    let range = tokens.range();
    let mut rows = Vec::new();
    let (mut first, mut size) = (range.start, 0usize);
    for i in range.clone() {
        // A token costs its bytes and its four-byte end.
        let cost = tokens.get(i).len() + 4;
        if size + cost > ROW_BYTES && i > first {
            rows.push((first, encode_tokens(tokens, first..i)));
            (first, size) = (i, 0);
        }
        size += cost;
    }
    if first < range.end {
        rows.push((first, encode_tokens(tokens, first..range.end)));
    }
    rows
}

/// One part of a job's tokens (a `TOKENS` row): the job's tokens `range`
/// of `tokens`, their bytes and ends, written without copying them first.
pub fn encode_tokens(tokens: &TokenList, range: std::ops::Range<u32>) -> Vec<u8> {
    let (from, bytes, ends) = tokens.slice_parts(range);
    let mut w = Writer(Vec::with_capacity(16 + bytes.len() + ends.len() * 4));
    w.u8(VERSION)
        .bytes(bytes)
        .u32(u32::try_from(ends.len()).unwrap_or(u32::MAX));
    for &e in ends {
        w.u32(e - from);
    }
    w.0
}

/// Reads a `TOKENS` row.
pub fn decode_tokens(row: &[u8]) -> Option<TokenList> {
    let mut r = Reader(row);
    if r.u8()? != VERSION {
        return None;
    }
    let bytes = r.bytes()?.to_vec();
    let n = r.u32()? as usize;
    let mut ends = Vec::with_capacity(n.min(row.len() / 4));
    for _ in 0..n {
        ends.push(r.u32()?);
    }
    TokenList::from_parts(bytes, ends)
}

/// The counters row of one family's app: every counter in [`Counter::ALL`]
/// order (`pending` is derived, so not stored).
pub fn encode_counters(c: &Counters) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(VERSION);
    for (_, v) in c.iter() {
        w.u64(v);
    }
    w.0
}

/// Reads a counters row.
pub fn decode_counters(row: &[u8]) -> Option<Counters> {
    let mut r = Reader(row);
    if r.u8()? != VERSION {
        return None;
    }
    let mut values = [0u64; Counter::ALL.len()];
    for v in &mut values {
        *v = r.u64()?;
    }
    let mut values = values.into_iter();
    Some(Counters::from_fn(|_| values.next().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rows_stay_under_the_row_size_and_cover_the_tokens_in_order() {
        let mut tokens = TokenList::default();
        for i in 0..20_000u32 {
            tokens.push(format!("{i:064x}").as_bytes());
        }
        let tokens = tokens.with_base(100);
        let rows = token_rows(&tokens);
        assert!(
            rows.len() > 1,
            "20,000 tokens of 64 bytes fit no single row"
        );
        let mut next = 100;
        for (base, row) in &rows {
            assert!(row.len() <= ROW_BYTES + 16, "{} bytes", row.len());
            assert_eq!(*base, next);
            let part = decode_tokens(row).expect("decodes").with_base(*base);
            assert_eq!(part.get(*base), tokens.get(*base));
            next = part.range().end;
        }
        assert_eq!(next, 20_100);
    }

    #[test]
    fn rows_round_trip() {
        let mut tokens = TokenList::default();
        tokens.push(b"one");
        tokens.push(b"three");
        let record = JobRecord {
            platform: "apns".into(),
            app: "default".into(),
            fields: b"{}".to_vec(),
            expires_at_ms: Some(5),
            due_ms: None,
            tokens,
        };
        let back = JobRecord::decode(&record.encode()).expect("decodes");
        assert_eq!(back.tokens.get(1), b"three");
        assert_eq!((back.expires_at_ms, back.due_ms), (Some(5), None));
        let mut state = JobState {
            seq: 3,
            platform: "gcm".into(),
            app: "a".into(),
            total: 130,
            counts: [1, 0, 0, 0, 0, 0],
            cancelled: true,
            open: false,
            truncated: true,
            lease: 70,
            bits: Vec::new(),
            notif_id: None,
        };
        assert!(state.set(0));
        assert!(!state.set(0));
        assert!(state.set(129));
        assert_eq!(JobState::decode(&state.encode()), Some(state.clone()));
        assert_eq!(state.unfinished(), vec![1..129]);
        state.notif_id = Some("n-1".into());
        assert_eq!(JobState::decode(&state.encode()), Some(state.clone()));
        let c = Counters {
            accepted: 9,
            successes: 4,
            ..Counters::default()
        };
        assert_eq!(
            decode_counters(&encode_counters(&c)).map(|c| c.pending),
            Some(5)
        );
        assert!(JobRecord::decode(b"\x09junk").is_none());
    }

    #[test]
    fn an_older_gateways_apns_record_reads_as_hex_text() {
        let mut bytes = TokenList::default();
        bytes.push(&[0xab; 32]);
        let mut row = JobRecord::encode_parts("apns", "default", b"{}", None, None, &bytes);
        row[0] = 1;
        let back = JobRecord::decode(&row).expect("a version-1 row still reads");
        assert_eq!(back.tokens.get(0), "ab".repeat(32).as_bytes());
    }
}
