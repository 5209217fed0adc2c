//! The `memory` store's kept answers and groups: maps with a time-ordered
//! expiry index, trimmed a bounded amount at each write (never a scan).

use std::collections::{BTreeSet, HashMap};

use crate::job::JobId;
use crate::store::keys::{IdemKey, Kept};

/// Expired rows removed per write at most.
const PURGE_BATCH: usize = 500;

/// What an expiry index entry names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Key(IdemKey),
    Group(JobId),
}

/// Kept answers and groups, each with its expiry.
#[derive(Debug, Default)]
pub(super) struct Kepts {
    answers: HashMap<IdemKey, Kept>,
    groups: HashMap<JobId, (Vec<JobId>, u64)>,
    expiry: BTreeSet<(u64, Row)>,
}

impl Kepts {
    /// The live answer under `key`.
    pub(super) fn answer(&self, key: &IdemKey, now: u64) -> Option<&Kept> {
        self.answers.get(key).filter(|k| !k.expired(now))
    }

    /// Keeps `kept` under `key` (replacing any: the caller checked).
    pub(super) fn put(&mut self, key: &IdemKey, kept: Kept, now: u64) {
        self.expiry
            .insert((kept.expires_at_ms, Row::Key(key.clone())));
        self.answers.insert(key.clone(), kept);
        self.purge(now);
    }

    /// Keeps a group until `expires_ms`.
    pub(super) fn put_group(&mut self, id: JobId, jobs: Vec<JobId>, expires_ms: u64, now: u64) {
        self.expiry.insert((expires_ms, Row::Group(id)));
        self.groups.insert(id, (jobs, expires_ms));
        self.purge(now);
    }

    /// A live group's jobs.
    pub(super) fn group(&self, id: JobId, now: u64) -> Option<Vec<JobId>> {
        self.groups
            .get(&id)
            .filter(|(_, expires)| *expires > now)
            .map(|(jobs, _)| jobs.clone())
    }

    /// Forgets up to [`PURGE_BATCH`] rows expired at `now`, oldest first. A
    /// row written again since (a key reused after it expired) has a later
    /// expiry, and its newer index entry keeps it.
    fn purge(&mut self, now: u64) {
        for _ in 0..PURGE_BATCH {
            let Some((at, _)) = self.expiry.first() else {
                return;
            };
            if *at > now {
                return;
            }
            let Some((at, row)) = self.expiry.pop_first() else {
                return;
            };
            match row {
                Row::Key(key) => {
                    if self
                        .answers
                        .get(&key)
                        .is_some_and(|k| k.expires_at_ms == at)
                    {
                        self.answers.remove(&key);
                    }
                }
                Row::Group(id) => {
                    if self.groups.get(&id).is_some_and(|(_, e)| *e == at) {
                        self.groups.remove(&id);
                    }
                }
            }
        }
    }

    /// Rows held (answers, groups).
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        (self.answers.len(), self.groups.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(expires: u64) -> Kept {
        Kept {
            fingerprint: None,
            status: 400,
            body: "{}".into(),
            job: None,
            lease_until_ms: None,
            expires_at_ms: expires,
        }
    }

    #[test]
    fn expired_rows_go_at_a_later_write_and_a_reused_key_stays() {
        let mut k = Kepts::default();
        let (a, b) = (
            IdemKey::new("s", "a").expect("key"),
            IdemKey::new("s", "b").expect("key"),
        );
        k.put(&a, kept(10), 0);
        k.put_group(JobId::new(), vec![JobId::new()], 10, 0);
        assert!(k.answer(&a, 9).is_some());
        assert!(k.answer(&a, 10).is_none(), "expired reads as absent");
        // `a` is used again after it expired, before any purge.
        k.put(&a, kept(100), 11);
        k.put(&b, kept(100), 11);
        assert_eq!(k.len(), (2, 0));
        assert!(k.answer(&a, 50).is_some());
    }
}
