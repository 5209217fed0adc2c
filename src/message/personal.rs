//! Per-target personalisation (`POST /send`'s `targets[].data` and
//! `targets[].badge`): a target's own fields, kept beside its token rather
//! than in a copy of the message, and applied by its platform only when
//! that token is sent.
//!
//! A personalised token is kept as its platform's kept form, then
//! [`MARK`], then the compact JSON of its [`Personal`] fields. JSON text
//! never holds a raw NUL and no kept token does either (a Web Push
//! subscription's binary keys come first and are skipped by the codec), so
//! the split is unambiguous. Stores keep the bytes as they are: a job of
//! 100k personalised targets stores its message once and 100k small
//! trailers.

use serde_json::{Map, Value};

use super::{MessageError, field_error};

/// The byte between a kept token and its personal fields.
pub const MARK: u8 = 0;

/// The most bytes one target's personal fields may take (their compact JSON).
pub const MAX_BYTES: usize = 2048;

/// One target's own fields, merged over the job's message when its token
/// is sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Personal {
    /// Merged over the message's shared `data`, key by key.
    pub data: Map<String, Value>,
    /// The app icon's badge count.
    pub badge: Option<u32>,
}

impl Personal {
    /// Reads a target's `data` and `badge`: `None` when it has neither.
    pub fn from_target(
        data: Option<&Value>,
        badge: Option<&Value>,
    ) -> Result<Option<Self>, MessageError> {
        let data = match data {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => {
                return Err(field_error("data", "a target's data must be a JSON object").into());
            }
        };
        let badge =
            match badge {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(
                    || {
                        field_error(
                            "badge",
                            "a target's badge must be a whole number, 0 or more",
                        )
                    },
                )?),
            };
        if data.is_empty() && badge.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { data, badge }))
    }

    /// Appends the trailer (`MARK` and the compact JSON) to a kept token;
    /// refuses fields over [`MAX_BYTES`].
    pub fn append_to(&self, kept: &mut Vec<u8>) -> Result<(), MessageError> {
        let mut object = Map::new();
        if !self.data.is_empty() {
            object.insert("data".into(), Value::Object(self.data.clone()));
        }
        if let Some(badge) = self.badge {
            object.insert("badge".into(), badge.into());
        }
        let json = serde_json::to_vec(&object).unwrap_or_default();
        if json.len() > MAX_BYTES {
            return Err(field_error(
                "data",
                format!(
                    "a target's data and badge take {} bytes; at most {MAX_BYTES}",
                    json.len()
                ),
            )
            .into());
        }
        kept.push(MARK);
        kept.extend_from_slice(&json);
        Ok(())
    }

    /// Reads a trailer back (the bytes after [`MARK`]).
    pub fn parse(trailer: &[u8]) -> Result<Self, MessageError> {
        let bad = |e: String| field_error("data", format!("unreadable personal fields: {e}"));
        let mut object: Map<String, Value> =
            serde_json::from_slice(trailer).map_err(|e| bad(e.to_string()))?;
        let data = match object.remove("data") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let badge = object
            .get("badge")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        Ok(Self { data, badge })
    }

    /// `data` merged over a message's shared data (the target's keys win).
    pub fn merge_data(&self, shared: &mut Map<String, Value>) {
        for (k, v) in &self.data {
            shared.insert(k.clone(), v.clone());
        }
    }
}

/// A platform message that can be personalised for one target.
pub trait Personalise: Sized {
    /// This message (whose stored form is `stored`) with `personal` applied
    /// the way its platform places data and a badge.
    fn personalise(&self, stored: &[u8], personal: &Personal) -> Result<Self, MessageError>;
}

/// The outcome reason of a token whose personalised message does not
/// build (the only message that can fail after the API checked it).
pub fn failure_reason(e: &MessageError) -> &'static str {
    match e {
        MessageError::TooLarge(_) => "PayloadTooLarge",
        MessageError::Field(_) => "BadPersonalData",
    }
}

/// Splits kept bytes at the first [`MARK`] at or after `from`: the token,
/// and its personal trailer if it has one.
pub fn split(kept: &[u8], from: usize) -> (&[u8], Option<&[u8]>) {
    match kept
        .get(from..)
        .and_then(|tail| tail.iter().position(|&b| b == MARK))
    {
        Some(at) => (&kept[..from + at], Some(&kept[from + at + 1..])),
        None => (kept, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trailer_round_trips_and_splits_off_the_token() {
        let p = Personal::from_target(Some(&json!({"unread": "3"})), Some(&json!(3)))
            .expect("valid")
            .expect("some");
        let mut kept = b"abcd".to_vec();
        p.append_to(&mut kept).expect("small");
        let (token, trailer) = split(&kept, 0);
        assert_eq!(token, b"abcd");
        assert_eq!(
            Personal::parse(trailer.expect("trailer")).expect("parse"),
            p
        );
        assert_eq!(split(b"plain", 0), (&b"plain"[..], None));
        // A NUL inside the skipped prefix (binary keys) is not a mark.
        assert_eq!(split(b"\0\0key", 2), (&b"\0\0key"[..], None));
    }

    #[test]
    fn empty_or_bad_fields_are_told_apart() {
        assert_eq!(Personal::from_target(None, None).expect("none"), None);
        assert!(Personal::from_target(Some(&json!([1])), None).is_err());
        assert!(Personal::from_target(None, Some(&json!(-1))).is_err());
        let big = Personal::from_target(Some(&json!({"k": "x".repeat(MAX_BYTES)})), None)
            .expect("valid")
            .expect("some");
        assert!(big.append_to(&mut Vec::new()).is_err());
    }
}
