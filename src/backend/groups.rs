//! Groups (one message to several platforms, [`crate::store::Submission::group`]):
//! read and cancelled through their jobs.

use super::Backend;
use crate::books::GroupStatus;
use crate::job::JobId;
use crate::store::StoreError;

impl Backend {
    /// A group's status from its jobs' (those still known); `None` when
    /// `id` is no group the store keeps.
    pub async fn group(&self, id: JobId) -> Result<Option<GroupStatus>, StoreError> {
        let Some(jobs) = self.0.store.group(id).await? else {
            return Ok(None);
        };
        let mut statuses = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some(status) = self.job(job).await? {
                statuses.push(status);
            }
        }
        Ok(Some(GroupStatus::of(id.to_string(), statuses)))
    }

    /// Cancels every job of a group (see [`Backend::cancel`]); `None` when
    /// `id` is no group the store keeps.
    pub async fn cancel_group(&self, id: JobId) -> Result<Option<GroupStatus>, StoreError> {
        let Some(jobs) = self.0.store.group(id).await? else {
            return Ok(None);
        };
        for job in jobs {
            self.cancel(job).await?;
        }
        self.group(id).await
    }
}
