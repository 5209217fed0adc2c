//! Report reads from Redis: the cluster-wide counters, lists and job statuses.

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::books::{Counters, JobStatus};
use crate::job::{Family, OutcomeKind};

use super::{RedisError, RedisStore};

impl RedisStore {
    /// The cluster-wide counters of one family's app.
    pub(super) async fn read_counters(
        &self,
        family: Family,
        app: &str,
    ) -> Result<Counters, RedisError> {
        let mut conn = self.connection()?;
        let r: redis::RedisResult<HashMap<String, i64>> =
            conn.hgetall(self.report_key(family, app)).await;
        let map = self.fail("HGETALL", r)?;
        Ok(Counters::from_fn(|c| {
            u64::try_from(map.get(c.name()).copied().unwrap_or(0)).unwrap_or(0)
        }))
    }

    /// A report list, oldest first; with `drain`, emptied in the same step.
    pub(super) async fn read_list(
        &self,
        family: Family,
        app: &str,
        list: &str,
        drain: bool,
    ) -> Result<Vec<serde_json::Value>, RedisError> {
        let key = self.list_key(family, app, list);
        let mut pipe = redis::pipe();
        pipe.atomic().lrange(&key, 0, -1);
        if drain {
            pipe.del(&key).ignore();
        }
        let mut conn = self.connection()?;
        let r: redis::RedisResult<(Vec<String>,)> = pipe.query_async(&mut conn).await;
        let (raw,) = self.fail("LRANGE", r)?;
        Ok(raw
            .iter()
            .rev()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// A job's status from Redis.
    pub(super) async fn read_job(&self, id: &str) -> Result<Option<JobStatus>, RedisError> {
        let mut conn = self.connection()?;
        let r: redis::RedisResult<HashMap<String, String>> = conn.hgetall(self.job_key(id)).await;
        let map = self.fail("HGETALL", r)?;
        if map.is_empty() {
            return Ok(None);
        }
        let get = |f: &str| map.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let total = get("total");
        let counts = OutcomeKind::ALL.map(|k| get(k.as_str()));
        let pending = total.saturating_sub(counts.iter().sum());
        Ok(Some(JobStatus {
            job: id.to_owned(),
            platform: map.get("platform").cloned().unwrap_or_default(),
            state: crate::job::state_of(pending, get("cancelled") > 0, false, get("open") > 0),
            total,
            counts,
            notif_id: map.get("notif_id").cloned(),
            unique_ids: Vec::new(),
            truncated: get("truncated") > 0,
        }))
    }
}
