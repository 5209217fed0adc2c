//! What one send request asks a store to keep, all or nothing
//! ([`Submission`]): its jobs (one; or several, each with its own id: one
//! per notification of gorush's `/api/push`, or one per platform of a
//! group), the group they form, and the idempotency claim kept with them.
//!
//! A store writes a submission in one write (memory: under one lock; disk:
//! one redb commit; Redis: one MULTI/EXEC or one script), so after a crash
//! either every job, the group and the key are there, or none is.

use std::time::Duration;

use super::NewJob;
use super::keys::Claim;
use crate::job::JobId;

/// One job of a submission, with the id its answer names.
#[derive(Debug)]
pub struct Planned {
    /// The job's id, chosen before the write (the answer kept with the
    /// job names it).
    pub id: JobId,
    /// The job.
    pub job: NewJob,
}

/// A send request's jobs, their group and their idempotency claim. Never
/// empty: built by [`Submission::one`], [`Submission::apart`] or
/// [`Submission::group`].
#[derive(Debug)]
pub struct Submission {
    jobs: Vec<Planned>,
    group: Option<JobId>,
    claim: Option<Claim>,
    watched: bool,
}

impl Submission {
    /// One job.
    pub fn one(id: JobId, job: NewJob) -> Self {
        Self::apart(Planned { id, job }, Vec::new())
    }

    /// Several jobs, each its own (gorush's notifications): admitted
    /// together, known by their own ids.
    pub fn apart(first: Planned, rest: Vec<Planned>) -> Self {
        let mut jobs = Vec::with_capacity(1 + rest.len());
        jobs.push(first);
        jobs.extend(rest);
        Self {
            jobs,
            group: None,
            claim: None,
            watched: false,
        }
    }

    /// One message to several platforms: a job per platform, known
    /// together as group `id` (`GET /jobs/{id}` sums them; `DELETE` cancels
    /// each).
    pub fn group(id: JobId, first: Planned, rest: Vec<Planned>) -> Self {
        Self {
            group: Some(id),
            ..Self::apart(first, rest)
        }
    }

    /// The same, with the idempotency claim to write with the jobs.
    pub fn with_claim(mut self, claim: Claim) -> Self {
        self.claim = Some(claim);
        self
    }

    /// The same, with someone waiting for the jobs' per-token results
    /// (`?wait`): a store that may deliver on another gateway keeps them
    /// for the waiter.
    pub fn watched(mut self) -> Self {
        self.watched = true;
        self
    }

    /// The jobs, in order.
    pub fn jobs(&self) -> &[Planned] {
        &self.jobs
    }

    /// The group's id, when the jobs form one.
    pub fn group_id(&self) -> Option<JobId> {
        self.group
    }

    /// The claim, if any.
    pub fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref()
    }

    /// True when someone waits for the results.
    pub fn is_watched(&self) -> bool {
        self.watched
    }

    /// Tokens over every job.
    pub fn tokens(&self) -> u64 {
        self.jobs.iter().map(|p| p.job.tokens.len() as u64).sum()
    }

    /// The longest delay of its jobs: a group is kept until its last job
    /// is due, plus the retention.
    pub fn longest_delay(&self) -> Duration {
        self.jobs
            .iter()
            .filter_map(|p| p.job.delay)
            .max()
            .unwrap_or_default()
    }

    /// The jobs, taken.
    pub fn into_jobs(self) -> Vec<Planned> {
        self.jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TokenList;
    use std::sync::Arc;

    fn job(tokens: usize, delay: Option<u64>) -> NewJob {
        let mut list = TokenList::default();
        for i in 0..tokens {
            list.push(format!("t{i}").as_bytes());
        }
        NewJob {
            platform: crate::job::test::PLATFORM,
            app: Arc::from("default"),
            fields: Vec::new(),
            message: None,
            tokens: list,
            expires_at: None,
            delay: delay.map(Duration::from_secs),
            notif_id: None,
        }
    }

    #[test]
    fn a_group_sums_its_jobs_and_waits_for_its_latest() {
        let g = Submission::group(
            JobId::new(),
            Planned {
                id: JobId::new(),
                job: job(2, None),
            },
            vec![Planned {
                id: JobId::new(),
                job: job(3, Some(60)),
            }],
        );
        assert_eq!((g.jobs().len(), g.tokens()), (2, 5));
        assert!(g.group_id().is_some() && g.claim().is_none() && !g.is_watched());
        assert_eq!(g.longest_delay(), Duration::from_secs(60));
        let one = Submission::one(JobId::new(), job(1, None)).watched();
        assert!(one.group_id().is_none() && one.is_watched());
    }
}
