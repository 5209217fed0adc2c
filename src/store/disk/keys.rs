//! Kept idempotency answers and groups on disk: the `kept` table (key →
//! [`Kept`], JSON), the `groups` table (group id → its jobs' ids), and one
//! time-ordered index over both, `expiry`, keyed by `(expires_at_ms,
//! row)`.
//!
//! A claim's answer is written in the commit that writes its jobs
//! ([`super::writer`]'s admissions), so no crash leaves a job without its
//! key or a key without its job. Expired rows are removed from the index's
//! old end, at most [`PURGE_BATCH`] per commit, like the finished jobs
//! ([`super::finished`]): no scan, however many expire at once.

use redb::{ReadableTable, Table, TableDefinition};

use super::WriteError;
use crate::job::JobId;
use crate::store::keys::{KeepIf, Kept, Taken};

/// Kept answers by `<scope>/<key>`.
pub(super) const KEPT: TableDefinition<&str, &[u8]> = TableDefinition::new("kept");
/// Groups: id → the ids of their jobs, 16 bytes each (little-endian).
pub(super) const GROUPS: TableDefinition<u128, &[u8]> = TableDefinition::new("groups");
/// `(expires_at_ms, "k" + key | "g" + hex id)` → nothing.
pub(super) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

/// Expired rows removed per commit at most.
pub const PURGE_BATCH: usize = 500;

/// The tables a commit writes keys and groups in.
pub(super) struct Tables<'t> {
    pub kept: Table<'t, &'static str, &'static [u8]>,
    pub groups: Table<'t, u128, &'static [u8]>,
    pub expiry: Table<'t, (u64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    /// Opens them in `txn`.
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            kept: txn.open_table(KEPT)?,
            groups: txn.open_table(GROUPS)?,
            expiry: txn.open_table(EXPIRY)?,
        })
    }

    /// The live answer under `key` at `now`.
    pub(super) fn answer(&self, key: &str, now: u64) -> Result<Option<Kept>, redb::Error> {
        Ok(self
            .kept
            .get(key)?
            .and_then(|v| Kept::decode(v.value()))
            .filter(|k| !k.expired(now)))
    }

    /// Writes a claim's answer if `key` holds none: the check and the write
    /// in the commit that writes its jobs.
    pub(super) fn claim(
        &mut self,
        key: &str,
        kept: &Kept,
        now: u64,
    ) -> Result<Result<(), Taken>, redb::Error> {
        if let Some(old) = self.answer(key, now)? {
            return Ok(Err(Taken::Kept(Box::new(old))));
        }
        self.put(key, kept)?;
        Ok(Ok(()))
    }

    /// Writes an answer when `when` allows; returns whether it did.
    pub(super) fn keep(
        &mut self,
        key: &str,
        kept: &Kept,
        when: KeepIf,
        now: u64,
    ) -> Result<bool, redb::Error> {
        let allowed = match (when, self.answer(key, now)?) {
            (KeepIf::Free(_), None) => true,
            (KeepIf::Bound(job), Some(old)) => old.is_bound_to(job),
            _ => false,
        };
        if allowed {
            self.put(key, kept)?;
        }
        Ok(allowed)
    }

    fn put(&mut self, key: &str, kept: &Kept) -> Result<(), redb::Error> {
        self.kept.insert(key, kept.encode().as_slice())?;
        let row = format!("k{key}");
        self.expiry.insert((kept.expires_at_ms, row.as_str()), ())?;
        Ok(())
    }

    /// Writes a group until `expires_ms`.
    pub(super) fn group(
        &mut self,
        id: u128,
        jobs: &[u128],
        expires_ms: u64,
    ) -> Result<(), redb::Error> {
        let bytes: Vec<u8> = jobs.iter().flat_map(|j| j.to_le_bytes()).collect();
        self.groups.insert(id, bytes.as_slice())?;
        let row = format!("g{id:032x}");
        self.expiry.insert((expires_ms, row.as_str()), ())?;
        Ok(())
    }

    /// Forgets up to [`PURGE_BATCH`] rows expired at `now`, oldest first.
    /// An answer written again since it expired (its key reused) carries a
    /// later expiry and is left alone. Returns the oldest expiry left.
    pub(super) fn purge(&mut self, now: u64) -> Result<Option<u64>, redb::Error> {
        let mut expired = Vec::new();
        for row in self.expiry.range((0u64, "")..(now, ""))? {
            if expired.len() >= PURGE_BATCH {
                break;
            }
            let (key, _) = row?;
            let (at, what) = key.value();
            expired.push((at, what.to_owned()));
        }
        for (at, what) in &expired {
            self.expiry.remove((*at, what.as_str()))?;
            if let Some(key) = what.strip_prefix('k') {
                let current = self.kept.get(key)?.and_then(|v| Kept::decode(v.value()));
                if current.is_none_or(|k| k.expires_at_ms == *at) {
                    self.kept.remove(key)?;
                }
            } else if let Some(id) = what
                .strip_prefix('g')
                .and_then(|h| u128::from_str_radix(h, 16).ok())
            {
                self.groups.remove(id)?;
            }
        }
        Ok(self.expiry.first()?.map(|(k, _)| k.value().0))
    }
}

/// The live answer under `key` (a read: the file as the last commit left it).
pub(super) fn read_answer(
    db: &redb::Database,
    key: &str,
    now: u64,
) -> Result<Option<Kept>, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let table = match txn.open_table(KEPT) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let row = table.get(key).map_err(|e| err(e.into()))?;
    Ok(row
        .and_then(|v| Kept::decode(v.value()))
        .filter(|k| !k.expired(now)))
}

/// A group's jobs (a read).
pub(super) fn read_group(db: &redb::Database, id: u128) -> Result<Option<Vec<JobId>>, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let table = match txn.open_table(GROUPS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let row = table.get(id).map_err(|e| err(e.into()))?;
    Ok(row.map(|v| {
        v.value()
            .chunks_exact(16)
            .filter_map(|c| c.try_into().ok())
            .map(|b: [u8; 16]| JobId::from_u128(u128::from_le_bytes(b)))
            .collect()
    }))
}

/// When the oldest row expires (read when the writer's view is loaded).
pub(super) fn oldest(txn: &redb::ReadTransaction) -> Result<Option<u64>, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    match txn.open_table(EXPIRY) {
        Ok(t) => Ok(t
            .first()
            .map_err(|e| err(e.into()))?
            .map(|(k, _)| k.value().0)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(expires: u64, job: Option<JobId>) -> Kept {
        Kept {
            fingerprint: None,
            status: 202,
            body: "{}".into(),
            job: job.map(|j| j.to_string()),
            lease_until_ms: None,
            expires_at_ms: expires,
        }
    }

    /// A claim takes a free key once; a bound answer is replaced only for
    /// its job; 1,200 expired rows go 500 a commit, oldest first, and a key
    /// reused after it expired stays.
    #[test]
    fn claims_keeps_and_a_bounded_purge() {
        let dir = std::env::temp_dir().join(format!(
            "pushgate-keys-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let db = redb::Database::create(dir.join("t.redb")).expect("db");
        let job = JobId::new();
        let txn = db.begin_write().expect("txn");
        {
            let mut t = Tables::open(&txn).expect("tables");
            let far = 1_000_000;
            assert!(
                t.claim("s/a", &kept(far, Some(job)), 0)
                    .expect("io")
                    .is_ok()
            );
            assert!(matches!(
                t.claim("s/a", &kept(far, None), 0).expect("io"),
                Err(Taken::Kept(_))
            ));
            let stranger = KeepIf::Free(crate::store::Owner::new());
            assert!(!t.keep("s/a", &kept(far, None), stranger, 0).expect("io"));
            assert!(
                !t.keep("s/a", &kept(far, None), KeepIf::Bound(JobId::new()), 0)
                    .expect("io")
            );
            assert!(
                t.keep("s/a", &kept(far, Some(job)), KeepIf::Bound(job), 0)
                    .expect("io")
            );
            for i in 0..1200u64 {
                t.claim(&format!("s/{i}"), &kept(1 + i, None), 0)
                    .expect("io")
                    .expect("free");
            }
            t.group(7, &[1, 2], 5).expect("group");
            // `s/0` expired at 1; used again at 2000, before its purge.
            assert!(t.claim("s/0", &kept(5000, None), 2000).expect("io").is_ok());
            // 1,201 expired rows: the group (at 5) and s/0..s/1199 (at 1..=1200).
            assert_eq!(t.purge(2000).expect("purge"), Some(500));
            assert_eq!(t.purge(2000).expect("purge"), Some(1000));
            assert_eq!(t.purge(2000).expect("purge"), Some(5000));
            assert!(
                t.answer("s/0", 2000).expect("io").is_some(),
                "reused key kept"
            );
            assert!(t.answer("s/1", 0).expect("io").is_none(), "purged");
            assert!(t.answer("s/a", 99).expect("io").is_some());
        }
        txn.commit().expect("commit");
        assert_eq!(read_group(&db, 7).expect("read"), None, "expired at 5");
        assert!(read_answer(&db, "s/a", 99).expect("read").is_some());
        assert!(read_answer(&db, "s/a", 1_000_000).expect("read").is_none());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
