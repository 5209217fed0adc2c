//! Idempotency keys as the stores keep them: a key ([`IdemKey`], scoped to
//! the API key that sent it), the answer kept under it ([`Kept`]), and the
//! claim an admission carries so that its jobs and their answer are written
//! in one store write ([`Claim`]).
//!
//! A key is in one of three states, and only a store write moves it:
//!
//! - free (never used, or expired);
//! - in flight: reserved by one request of this process or, with Redis, of
//!   any gateway ([`Owner`]); not durable, it dies with its request;
//! - kept: the first answer, until `expires_at_ms`. A key kept with a job is
//!   written in the commit (disk) or MULTI/EXEC (Redis) that writes the
//!   job, so no crash can leave a job without its key.
//!
//! What an answer to a second request with the same key is ([`Found`]) is
//! decided above the stores (`api::idempotency`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::job::{JobId, decode_hex, hex_encode};

/// Longest `Idempotency-Key`, in bytes.
pub const MAX_KEY: usize = 255;

/// An `Idempotency-Key` that cannot be used as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty.
    #[error("Idempotency-Key is empty: send 1 to {MAX_KEY} visible ASCII characters")]
    Empty,
    /// Over [`MAX_KEY`] bytes.
    #[error("Idempotency-Key is {0} bytes long: send at most {MAX_KEY} visible ASCII characters")]
    TooLong(usize),
    /// A byte that is not visible ASCII (`!` to `~`).
    #[error(
        "Idempotency-Key holds a character that is not visible ASCII (at byte {0}): send 1 to {MAX_KEY} of `!` to `~`"
    )]
    NotVisible(usize),
}

/// A validated idempotency key within its scope (the API key that sent
/// it): two API keys never share a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdemKey {
    /// `<scope>/<key>`: the scope is fixed-width hex, so the first `/`
    /// splits them whatever the key holds.
    stored: String,
}

impl IdemKey {
    /// The key `key` (checked: 1–255 visible ASCII) within `scope` (a
    /// digest of the API key, hex, never the key itself).
    pub fn new(scope: &str, key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY {
            return Err(KeyError::TooLong(key.len()));
        }
        if let Some(at) = key.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(KeyError::NotVisible(at));
        }
        Ok(Self {
            stored: format!("{scope}/{key}"),
        })
    }

    /// The form stores keep it under.
    pub fn stored(&self) -> &str {
        &self.stored
    }

    /// The key as the sender wrote it (for logs).
    pub fn key(&self) -> &str {
        self.stored
            .split_once('/')
            .map_or(self.stored.as_str(), |(_, k)| k)
    }
}

impl fmt::Display for IdemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// What makes two requests "the same": a digest of the route and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = Vec::with_capacity(32);
        match decode_hex(&text, &mut out) {
            Some(32) => {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&out);
                Ok(Self(bytes))
            }
            _ => Err(serde::de::Error::custom("a fingerprint is 64 hex digits")),
        }
    }
}

/// The request that holds a key in flight: random per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner(pub u128);

impl Owner {
    /// A fresh owner.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
}

impl Default for Owner {
    fn default() -> Self {
        Self::new()
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        u128::from_str_radix(&text, 16)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// An answer kept under a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The request it answered; `None` when it cannot be known (a stream
    /// cut before its end): any request with the key then gets it.
    #[serde(rename = "fp")]
    pub fingerprint: Option<Fingerprint>,
    /// Its HTTP status (2xx or 4xx).
    pub status: u16,
    /// Its JSON body, as sent.
    pub body: String,
    /// The (first) job it admitted, when it admitted any: an answer bound
    /// to a job is replaced only by a later answer for the same job (the
    /// end of a `wait`, of a stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// While a stream is still being read: until then (ms since the
    /// epoch) a request with the key gets 409; after it (the stream's
    /// gateway died), the answer as it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
    /// When it expires (ms since the epoch): `server.idempotency_ttl_s`
    /// after the first answer.
    pub expires_at_ms: u64,
}

impl Kept {
    /// True once it has expired: the key is free again.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// True when it is bound to `job`.
    pub fn is_bound_to(&self, job: JobId) -> bool {
        self.job.as_deref() == Some(job.to_string().as_str())
    }

    /// The stored bytes (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From [`Kept::encode`]'s bytes; `None` for bytes it did not write.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A key as a shared store (Redis) holds it: in flight or kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// Reserved by a request still being answered.
    Flight(Owner),
    /// The first answer.
    Kept(Kept),
}

/// What a store holds under a key when a request reserves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing: the key is now reserved for the asking request.
    Reserved,
    /// Another request holds it and is not answered yet.
    InFlight,
    /// The first answer.
    Kept(Kept),
}

/// Why an admission's claim could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Another request holds the key in flight (a shared store only: in
    /// one process, the reservation of [`crate::store::Store::reserve`]
    /// already said so).
    InFlight,
    /// The key holds an answer.
    Kept(Box<Kept>),
}

/// How long a reservation lasts in a shared store (Redis) when its
/// gateway dies before answering: long past any admission (a few round
/// trips), short enough that a sender retrying after a crash is not held
/// off for long. A reservation never makes two jobs: the admission checks
/// the key in the same script that writes the job.
pub const FLIGHT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// An admission's idempotency claim: its key, the request holding it, and
/// the answer kept with its jobs (built before the store write: the job ids
/// are chosen before it).
#[derive(Debug, Clone)]
pub struct Claim {
    /// The key.
    pub key: IdemKey,
    /// The request that reserved it.
    pub owner: Owner,
    /// The answer to keep.
    pub kept: Kept,
}

/// When [`crate::store::Store::keep`] may write an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepIf {
    /// The key holds no answer (free, or in flight for `Owner`, whose
    /// reservation ends): a first answer that admitted nothing (a 4xx).
    Free(Owner),
    /// The key's answer is bound to this job: a later answer for the same
    /// request (the end of a `wait` or of a stream) replaces it.
    Bound(JobId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        assert!(IdemKey::new("s", "order-42:retry/1").is_ok());
        assert_eq!(IdemKey::new("s", ""), Err(KeyError::Empty));
        assert_eq!(
            IdemKey::new("s", &"k".repeat(256)),
            Err(KeyError::TooLong(256))
        );
        assert!(IdemKey::new("s", &"k".repeat(255)).is_ok());
        assert_eq!(IdemKey::new("s", "a b"), Err(KeyError::NotVisible(1)));
        assert_eq!(IdemKey::new("s", "é"), Err(KeyError::NotVisible(0)));
        let k = IdemKey::new("00ff", "a/b").expect("a key");
        assert_eq!((k.stored(), k.key()), ("00ff/a/b", "a/b"));
        assert_ne!(k, IdemKey::new("00fe", "a/b").expect("a key"));
    }

    #[test]
    fn records_round_trip() {
        let kept = Kept {
            fingerprint: Some(Fingerprint([7; 32])),
            status: 202,
            body: r#"{"job":"j"}"#.into(),
            job: Some(JobId::new().to_string()),
            lease_until_ms: None,
            expires_at_ms: 9,
        };
        assert_eq!(Kept::decode(&kept.encode()), Some(kept.clone()));
        for record in [Record::Flight(Owner::new()), Record::Kept(kept)] {
            let text = serde_json::to_string(&record).expect("json");
            assert_eq!(
                serde_json::from_str::<Record>(&text).expect("parse"),
                record
            );
        }
        assert!(Kept::decode(b"nope").is_none());
    }
}
