//! Job routes: `GET /jobs` (a list, newest first), `GET /jobs/{id}` (one
//! job's progress) and `DELETE /jobs/{id}` (cancel).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::{ApiError, AppState, store_unavailable};
use crate::books::JobFilter;
use crate::job::JobId;

/// `GET /jobs` lists this many jobs unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The most jobs one `GET /jobs` lists.
pub const MAX_LIMIT: usize = 1000;

/// `?state=running|scheduled|done&limit=50`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// Which jobs; absent: all.
    pub state: Option<String>,
    /// How many at most (1–1000, default 50); text, so a bad value gets our
    /// own error code rather than the extractor's.
    pub limit: Option<String>,
}

impl ListQuery {
    /// The filter and the limit, or the 400 that names the bad one.
    pub fn parse(&self) -> Result<(JobFilter, usize), ApiError> {
        // Present but empty (`?state=`) is a mistake, not "all": refused.
        let filter = match self.state.as_deref() {
            None => JobFilter::All,
            Some(word) => JobFilter::parse(word).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_state",
                    format!("state={word:?}: use running, scheduled or done (or leave it out for every job)"),
                )
            })?,
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_limit",
                        format!("limit={text:?}: use a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
                    )
                })?,
        };
        Ok((filter, limit))
    }
}

/// `GET /jobs`: `{"jobs": [<GET /jobs/{id} body>, …]}`, unfinished jobs
/// newest accepted first, then finished ones newest finished first.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (filter, limit) = query.parse()?;
    let jobs = state
        .backend
        .jobs(filter, limit)
        .await
        .map_err(store_unavailable)?;
    let jobs: Vec<Value> = jobs.iter().map(|s| s.to_json()).collect();
    Ok(Json(json!({ "jobs": jobs })))
}

fn parse_job_id(id: &str) -> Result<JobId, ApiError> {
    JobId::parse(id)
        .ok_or_else(|| ApiError::bad_request("bad_job_id", format!("{id:?} is not a job id")))
}

fn no_job(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no job {id} (unknown, expired after server.job_retention_s, or older than the last report.max_jobs jobs)"
    ))
}

/// `DELETE /jobs/{id}`: tokens not yet sent end as `cancelled`; a scheduled
/// job is cancelled whole at once, a running one as workers reach its tokens.
/// A group's id cancels each of its jobs.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let parsed = parse_job_id(&id)?;
    let backend = &state.backend;
    if let Some(status) = backend.cancel(parsed).await.map_err(store_unavailable)? {
        return Ok(Json(status.to_json()));
    }
    match backend
        .cancel_group(parsed)
        .await
        .map_err(store_unavailable)?
    {
        Some(group) => Ok(Json(group.to_json())),
        None => Err(no_job(&id)),
    }
}

/// `GET /jobs/{id}`: one job's progress, or a group's (its jobs summed,
/// with `by_platform`).
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let parsed = parse_job_id(&id)?;
    let backend = &state.backend;
    if let Some(status) = backend.job(parsed).await.map_err(store_unavailable)? {
        return Ok(Json(status.to_json()));
    }
    match backend.group(parsed).await.map_err(store_unavailable)? {
        Some(group) => Ok(Json(group.to_json())),
        None => Err(no_job(&id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(state: Option<&str>, limit: Option<&str>) -> ListQuery {
        ListQuery {
            state: state.map(str::to_owned),
            limit: limit.map(str::to_owned),
        }
    }

    #[test]
    fn the_query_is_checked_with_a_code_per_field() {
        assert_eq!(q(None, None).parse().ok(), Some((JobFilter::All, 50)));
        assert_eq!(
            q(Some("done"), Some("1000")).parse().ok(),
            Some((JobFilter::Done, 1000))
        );
        for (state, limit, code) in [
            (Some("finished"), None, "bad_state"),
            (Some(""), None, "bad_state"),
            (None, Some(""), "bad_limit"),
            (None, Some("0"), "bad_limit"),
            (None, Some("1001"), "bad_limit"),
            (None, Some("ten"), "bad_limit"),
        ] {
            let e = q(state, limit).parse().err().map(|e| e.code);
            assert_eq!(e, Some(code), "{state:?} {limit:?}");
        }
    }
}
