//! Report reads from Redis: the cluster-wide counters, lists and job statuses.

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::books::{Counters, JobStatus};
use crate::job::Family;

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
        Ok(self.statuses(&[id.to_owned()]).await?.pop())
    }
}
