//! The wire format: one stream entry ([`Chunk`]) per up to
//! [`super::CHUNK_TOKENS`] tokens of one job, JSON in the entry's `c` field,
//! and the report counter field names.

use serde::{Deserialize, Serialize};

/// One stream entry: some tokens of one job, and what is needed to send them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    /// The job id.
    pub job: String,
    /// `apns`, `fcm` or `gcm`.
    pub platform: String,
    /// The app (credential set).
    pub app: String,
    /// The job's index of this chunk's first token (makes delayed members unique).
    pub index: u32,
    /// The message as its platform stores it (JSON text).
    pub fields: String,
    /// After this (ms since epoch) nothing more is sent.
    pub expires_at_ms: Option<u64>,
    /// The tokens as the sender wrote them (APNs: lower-case hex).
    pub tokens: Vec<String>,
    /// The sender's correlation id (gorush `notif_id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notif_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_round_trips() {
        let chunk = Chunk {
            job: crate::job::JobId::new().to_string(),
            platform: "apns".into(),
            app: "default".into(),
            index: 0,
            fields: r#"{"payload":"{}","priority":10}"#.into(),
            expires_at_ms: None,
            tokens: vec!["ab".repeat(32)],
            notif_id: None,
        };
        let text = serde_json::to_string(&chunk).expect("serialize");
        let back: Chunk = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.tokens, chunk.tokens);
        assert_eq!(back.fields, chunk.fields);
    }
}
