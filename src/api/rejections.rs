//! The refused tokens of a send request, bounded: the first [`MAX_LISTED`]
//! are listed with their reason, every one is counted, in total and per
//! reason. A body of a million bad tokens answers in a few kilobytes and its
//! memory goes when the answer does.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Refused tokens listed in an answer, at most.
pub const MAX_LISTED: usize = 1000;

/// One refused token in the answer.
#[derive(Debug, Serialize)]
pub struct Rejected<'a> {
    /// The token as sent (or as its platform shows it: a subscription's endpoint).
    pub token: Cow<'a, str>,
    /// Why (the upstream's own word for it).
    pub reason: &'static str,
}

/// The refused tokens of one request.
#[derive(Debug, Default)]
pub struct Rejections<'a> {
    listed: Vec<Rejected<'a>>,
    count: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

impl<'a> Rejections<'a> {
    /// Records a refused token (listed while fewer than [`MAX_LISTED`] are).
    pub fn push(&mut self, token: Cow<'a, str>, reason: &'static str) {
        if self.listed.len() < MAX_LISTED {
            self.listed.push(Rejected { token, reason });
        }
        self.count += 1;
        *self.by_reason.entry(reason).or_default() += 1;
    }

    /// Records a token its platform refused; `token` (the token as sent) is
    /// only asked for while the list has room.
    pub fn refuse(
        &mut self,
        refused: crate::platform::TokenRefused,
        token: impl FnOnce() -> Cow<'a, str>,
    ) {
        let listed = self.listed.len() < MAX_LISTED;
        let shown = match refused.shown {
            Some(shown) => Cow::Owned(shown),
            None if listed => token(),
            None => Cow::Borrowed(""),
        };
        self.push(shown, refused.reason);
    }

    /// Every refused token, listed or not.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The listed ones, in request order.
    pub fn listed(&self) -> &[Rejected<'a>] {
        &self.listed
    }

    /// Counts per reason.
    pub fn by_reason(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_reason
    }

    /// The answer's fields: `rejected` (the listed ones, each token under
    /// `key`: `token`, or `endpoint` for Web Push), `rejected_count`,
    /// `rejected_by_reason`, and `rejected_truncated` when not all are listed.
    pub fn fields(&self, key: &str) -> Value {
        let listed: Vec<Value> = self
            .listed
            .iter()
            .map(|r| {
                let mut entry = Map::new();
                entry.insert(key.to_owned(), Value::from(&*r.token));
                entry.insert("reason".to_owned(), Value::from(r.reason));
                Value::Object(entry)
            })
            .collect();
        json!({
            "rejected": listed,
            "rejected_count": self.count,
            "rejected_by_reason": self.by_reason,
            "rejected_truncated": self.count > self.listed.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_first_thousand_and_counts_all_per_reason() {
        let mut r = Rejections::default();
        for i in 0..2500 {
            r.push(
                "zz".into(),
                if i % 5 == 0 {
                    "Other"
                } else {
                    "BadDeviceToken"
                },
            );
        }
        assert_eq!(r.count(), 2500);
        assert_eq!(r.listed().len(), MAX_LISTED);
        let f = r.fields("token");
        assert_eq!(f["rejected"][0]["token"], "zz");
        assert_eq!(f["rejected_count"], 2500);
        assert_eq!(f["rejected_by_reason"]["BadDeviceToken"], 2000);
        assert_eq!(f["rejected_by_reason"]["Other"], 500);
        assert_eq!(f["rejected_truncated"], true);
        assert!(Rejections::default().is_empty());
        // Web Push names a refused subscription by its endpoint.
        let mut r = Rejections::default();
        r.push("https://push.example/1".into(), "BadEndpoint");
        assert_eq!(
            r.fields("endpoint")["rejected"][0]["endpoint"],
            "https://push.example/1"
        );
    }
}
