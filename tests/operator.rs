//! The operator's view, over real sockets: `GET /jobs` on every backend
//! (newest first, by state, bounded, refused with a code when asked wrong),
//! finished jobs expiring after `server.job_retention_s` (memory, the disk
//! store's time index across a restart, Redis' TTL and sorted sets),
//! `/status.json`'s jobs and chart history, the two gauges the alerts need,
//! and how many info lines 1,000 small jobs cost the real binary.
//!
//! Every wait is "until it happens, or time out": nothing depends on how
//! fast the machine is. What it leaves out: the status page in a browser
//! (`scripts/check-status-page`), and a million finished jobs (the index
//! that keeps listing and expiry bounded is unit-tested in `report::jobs`
//! and read through here).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pushgate::config::{ApnsSection, FileConfig};
use pushgate::gateway::Gateway;
use pushgate::mock::Faults;
use serde_json::{Value, json};

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The `job` ids of a `GET /jobs` answer, in order.
fn ids(answer: &Value) -> Vec<String> {
    answer["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array: {answer}"))
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (60 s at most) until `GET base+path` answers what `done` accepts.
async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    what: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(client, base, path).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} {body} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_job_done(client: &reqwest::Client, base: &str, job: &str) -> Value {
    wait_for(client, base, &format!("/jobs/{job}"), "job done", |s, b| {
        s == 200 && b["state"] == "done"
    })
    .await
}

async fn post(client: &reqwest::Client, base: &str, body: Value) -> String {
    let (status, answer) = post_json_to(client, base, "/apns/send", &body).await;
    assert_eq!(status, 202, "{answer}");
    answer["job"].as_str().unwrap().to_owned()
}

fn tokens(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| apns_token(prefix, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_newest_first_by_state_and_bad_queries_are_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Every answer takes 2 s, so a job just posted is still running.
        let env = apns_env(ApnsSetup {
            faults: Faults {
                latency_ms: 2000,
                ..Faults::default()
            },
            ..ApnsSetup::default()
        })
        .await;
        let (base, c) = (env.gateway.url(), &env.client);
        let a = post(
            c,
            &base,
            json!({"tokens": tokens("aaaa", 3), "payload": apns_payload()}),
        )
        .await;
        wait_job_done(c, &base, &a).await;
        let b = post(
            c,
            &base,
            json!({"tokens": tokens("bbbb", 3), "payload": apns_payload()}),
        )
        .await;
        wait_job_done(c, &base, &b).await;
        let s = post(
            c,
            &base,
            json!({"tokens": tokens("cccc", 4), "payload": apns_payload(), "delay_seconds": 3600}),
        )
        .await;
        let r = post(
            c,
            &base,
            json!({"tokens": tokens("dddd", 5), "payload": apns_payload()}),
        )
        .await;

        let (_, running) = get(c, &base, "/jobs?state=running").await;
        assert_eq!(ids(&running), vec![r.clone()], "{running}");
        let job = &running["jobs"][0];
        assert_eq!(
            (
                job["state"].as_str(),
                job["total"].as_u64(),
                job["pending"].as_u64()
            ),
            (Some("running"), Some(5), Some(5)),
            "{job}"
        );
        assert!(
            job["accepted_at"].as_u64().is_some() && job.get("finished_at").is_none(),
            "{job}"
        );
        let (_, scheduled) = get(c, &base, "/jobs?state=scheduled").await;
        assert_eq!(ids(&scheduled), vec![s.clone()], "{scheduled}");
        let (_, done) = get(c, &base, "/jobs?state=done").await;
        assert_eq!(
            ids(&done),
            vec![b.clone(), a.clone()],
            "newest finished first: {done}"
        );
        assert!(
            done["jobs"][0]["finished_at"].as_u64() >= done["jobs"][1]["finished_at"].as_u64(),
            "{done}"
        );
        let (_, all) = get(c, &base, "/jobs").await;
        assert_eq!(
            ids(&all),
            vec![r.clone(), s.clone(), b.clone(), a.clone()],
            "unfinished first: {all}"
        );
        let (_, two) = get(c, &base, "/jobs?limit=2").await;
        assert_eq!(ids(&two), vec![r.clone(), s.clone()], "{two}");

        for (query, code) in [
            ("state=finished", "bad_state"),
            ("limit=0", "bad_limit"),
            ("limit=1001", "bad_limit"),
            ("limit=many", "bad_limit"),
        ] {
            let (status, body) = get(c, &base, &format!("/jobs?{query}")).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some(code)),
                "{query}: {body}"
            );
        }

        // The status page's snapshot: the same running and scheduled jobs,
        // and a chart series for every registered platform.
        let (_, status) = get(c, &base, "/status.json").await;
        let listed: Vec<&str> = status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap())
            .collect();
        assert_eq!(listed, vec![r.as_str(), s.as_str()], "{}", status["jobs"]);
        let history = &status["history"];
        assert_eq!(
            (history["interval_s"].as_u64(), history["window_s"].as_u64()),
            (Some(5), Some(600)),
            "{history}"
        );
        assert!(history["tokens_per_s"]["apns"].is_array(), "{history}");
        assert!(history["time_ms"].is_array(), "{history}");

        // The gauges the alerts read: capacity, and the age of what is due.
        let metrics = env
            .client
            .get(env.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l == "pushgate_queue_capacity 1000000"),
            "{metrics}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("pushgate_oldest_pending_seconds ")),
            "{metrics}"
        );

        // Cancelled through the API, the scheduled job is the newest finished.
        let cancelled: Value = c
            .delete(format!("{base}/jobs/{s}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            cancelled["state"].as_str(),
            Some("cancelled"),
            "{cancelled}"
        );
        let (_, done) = get(c, &base, "/jobs?state=done&limit=1").await;
        assert_eq!(ids(&done), vec![s.clone()], "{done}");
        wait_job_done(c, &base, &r).await;
        let (_, running) = get(c, &base, "/jobs?state=running").await;
        assert!(ids(&running).is_empty(), "{running}");
        let metrics = env
            .client
            .get(env.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l == "pushgate_oldest_pending_seconds 0"),
            "nothing pending: {metrics}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_forgets_finished_jobs_after_the_retention() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|file| file.server.job_retention_s = 1),
            ..ApnsSetup::default()
        })
        .await;
        let (base, c) = (env.gateway.url(), &env.client);
        let job = post(
            c,
            &base,
            json!({"tokens": tokens("aaaa", 2), "payload": apns_payload()}),
        )
        .await;
        wait_job_done(c, &base, &job).await;
        wait_for(c, &base, &format!("/jobs/{job}"), "expired job", |s, _| {
            s == 404
        })
        .await;
        let (_, done) = get(c, &base, "/jobs?state=done").await;
        assert!(ids(&done).is_empty(), "{done}");
    })
    .await
    .unwrap();
}

/// A gateway on the disk backend in `dir`, finished jobs kept `retention_s`.
async fn disk_gateway(apns: &ApnsSection, dir: &Path, retention_s: u64) -> Gateway {
    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    file.server.job_retention_s = retention_s;
    file.queue.data_dir = dir.join("data").display().to_string();
    file.apns = Some(apns.clone());
    Gateway::start(&file.validate().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_lists_finished_jobs_from_its_index_across_a_restart_and_expires_them() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("operator-disk");
        let (_mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let c = reqwest::Client::new();
        let gateway = disk_gateway(&apns, &dir, 3600).await;
        let base = gateway.url();
        let mut jobs = Vec::new();
        for prefix in ["aaaa", "bbbb", "cccc"] {
            let job = post(
                &c,
                &base,
                json!({"tokens": tokens(prefix, 3), "payload": apns_payload()}),
            )
            .await;
            wait_job_done(&c, &base, &job).await;
            jobs.push(job);
        }
        jobs.reverse();
        // Written by the commit after the last outcome: wait for the index.
        let done = wait_for(&c, &base, "/jobs?state=done", "the index", |_, b| {
            b["jobs"].as_array().is_some_and(|j| j.len() == 3)
        })
        .await;
        assert_eq!(ids(&done), jobs, "newest finished first: {done}");
        assert!(done["jobs"][0]["finished_at"].as_u64().is_some(), "{done}");
        gateway.shutdown(Duration::from_secs(2)).await;

        // The same store again: the list comes back from the index.
        let gateway = disk_gateway(&apns, &dir, 3600).await;
        let base = gateway.url();
        let (_, done) = get(&c, &base, "/jobs?state=done").await;
        assert_eq!(ids(&done), jobs, "after a restart: {done}");
        let (_, all) = get(&c, &base, "/jobs?limit=2").await;
        assert_eq!(ids(&all), jobs[..2].to_vec(), "{all}");
        let (status, one) = get(&c, &base, &format!("/jobs/{}", jobs[2])).await;
        assert_eq!(
            (status, one["state"].as_str()),
            (200, Some("done")),
            "{one}"
        );
        gateway.shutdown(Duration::from_secs(2)).await;

        // Kept a second only: the idle gateway's writer expires them from
        // the index, and the job table forgets them.
        let gateway = disk_gateway(&apns, &dir, 1).await;
        let base = gateway.url();
        wait_for(
            &c,
            &base,
            "/jobs?state=done",
            "expired from the index",
            |_, b| b["jobs"].as_array().is_some_and(Vec::is_empty),
        )
        .await;
        wait_for(
            &c,
            &base,
            &format!("/jobs/{}", jobs[0]),
            "expired job",
            |s, _| s == 404,
        )
        .await;
        gateway.shutdown(Duration::from_secs(2)).await;
        let gateway = disk_gateway(&apns, &dir, 3600).await;
        let (_, done) = get(&c, &gateway.url(), "/jobs?state=done").await;
        assert!(
            ids(&done).is_empty(),
            "purged on disk, not only hidden: {done}"
        );
        gateway.shutdown(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
}

/// A `redis-server` of the test's own on a free port, killed when dropped.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin =
            std::env::var("PUSHGATE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
            ])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get_multiplexed_async_connection().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url }
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lists_the_clusters_jobs_by_time_and_expires_finished_ones() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("operator-redis");
        let redis = Redis::start().await;
        let (_mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let c = reqwest::Client::new();
        let config = |retention_s: u64| {
            let mut file = FileConfig::default();
            file.server.listen = "127.0.0.1:0".into();
            file.server.job_retention_s = retention_s;
            file.server.shutdown_grace = 2;
            file.queue.backend = "redis".into();
            file.queue.redis_url = redis.url.clone();
            file.queue.consumer = "op".into();
            file.apns = Some(apns.clone());
            file.validate().unwrap()
        };
        let gateway = Gateway::start(&config(3600)).await.unwrap();
        let base = gateway.url();
        let a = post(
            &c,
            &base,
            json!({"tokens": tokens("aaaa", 3), "payload": apns_payload()}),
        )
        .await;
        wait_job_done(&c, &base, &a).await;
        let b = post(
            &c,
            &base,
            json!({"tokens": tokens("bbbb", 1500), "payload": apns_payload()}),
        )
        .await;
        wait_job_done(&c, &base, &b).await;
        let s = post(
            &c,
            &base,
            json!({"tokens": tokens("cccc", 2), "payload": apns_payload(), "delay_seconds": 3600}),
        )
        .await;
        let (_, one) = get(&c, &base, &format!("/jobs/{s}")).await;
        assert_eq!(
            one["state"].as_str(),
            Some("scheduled"),
            "a delayed job reads as scheduled: {one}"
        );
        let done = wait_for(&c, &base, "/jobs?state=done", "both done", |_, b| {
            b["jobs"].as_array().is_some_and(|j| j.len() == 2)
        })
        .await;
        assert_eq!(ids(&done), vec![b.clone(), a.clone()], "{done}");
        assert!(
            done["jobs"][0]["finished_at"].as_u64().is_some()
                && done["jobs"][0]["accepted_at"].as_u64().is_some(),
            "{done}"
        );
        let (_, scheduled) = get(&c, &base, "/jobs?state=scheduled").await;
        assert_eq!(ids(&scheduled), vec![s.clone()], "{scheduled}");
        let (_, running) = get(&c, &base, "/jobs?state=running").await;
        assert!(ids(&running).is_empty(), "{running}");
        let (_, all) = get(&c, &base, "/jobs").await;
        assert_eq!(ids(&all), vec![s.clone(), b.clone(), a.clone()], "{all}");
        let live: u64 = redis
            .cmd(redis::cmd("ZCARD").arg("{pushgate}:jobs:live"))
            .await;
        let finished: u64 = redis
            .cmd(redis::cmd("ZCARD").arg("{pushgate}:jobs:done"))
            .await;
        assert_eq!((live, finished), (1, 2));
        let ttl: i64 = redis
            .cmd(redis::cmd("TTL").arg(format!("{{pushgate}}:job:{a}")))
            .await;
        assert!(
            ttl > 0 && ttl <= 3600,
            "the job hash expires with the retention: {ttl}"
        );

        // Cancelled, a scheduled job ends now rather than at its send time.
        let cancelled: Value = c
            .delete(format!("{base}/jobs/{s}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cancelled["job"].as_str(), Some(s.as_str()), "{cancelled}");
        let gone = wait_for(&c, &base, &format!("/jobs/{s}"), "cancelled", |_, b| {
            b["state"] == "cancelled"
        })
        .await;
        assert_eq!(gone["cancelled"].as_u64(), Some(2), "{gone}");
        let (_, scheduled) = get(&c, &base, "/jobs?state=scheduled").await;
        assert!(ids(&scheduled).is_empty(), "{scheduled}");
        let done = wait_for(
            &c,
            &base,
            "/jobs?state=done",
            "the cancelled job listed",
            |_, b| b["jobs"].as_array().is_some_and(|j| j.len() == 3),
        )
        .await;
        assert_eq!(ids(&done)[0], s, "{done}");
        gateway.shutdown(Duration::from_secs(2)).await;

        // A second's retention: the finished job's hash expires in Redis, and
        // the next job's admission trims the finished set by score.
        let gateway = Gateway::start(&config(1)).await.unwrap();
        let base = gateway.url();
        let d = post(
            &c,
            &base,
            json!({"tokens": tokens("dddd", 2), "payload": apns_payload()}),
        )
        .await;
        wait_job_done(&c, &base, &d).await;
        wait_for(&c, &base, &format!("/jobs/{d}"), "expired job", |s, _| {
            s == 404
        })
        .await;
        post(
            &c,
            &base,
            json!({"tokens": tokens("eeee", 1), "payload": apns_payload(), "delay_seconds": 3600}),
        )
        .await;
        let kept: Option<f64> = redis
            .cmd(redis::cmd("ZSCORE").arg("{pushgate}:jobs:done").arg(&d))
            .await;
        assert_eq!(kept, None, "trimmed by score");
        let (_, done) = get(&c, &base, "/jobs?state=done").await;
        assert!(ids(&done).is_empty(), "{done}");
        gateway.shutdown(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_small_jobs_log_two_info_lines_each_and_no_more() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = scratch("operator-logs");
        let (_mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let mut file = FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        file.queue.backend = "memory".into();
        file.apns = Some(apns);
        let mut served = Served::start(&dir, "logs", &file).await;
        let before = served.lines.lock().unwrap().len();
        let c = reqwest::Client::new();
        const JOBS: usize = 1000;
        let mut posts = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let (c, base) = (c.clone(), served.url.clone());
            posts.spawn(async move {
                for n in (worker..JOBS).step_by(8) {
                    let tokens: Vec<String> = (0..1 + n % 3).map(|i| apns_token("abcd", n * 4 + i)).collect();
                    post(&c, &base, json!({"tokens": tokens, "payload": apns_payload()})).await;
                }
            });
        }
        while let Some(done) = posts.join_next().await {
            done.unwrap();
        }
        let accepted: u64 = (0..JOBS as u64).map(|n| 1 + n % 3).sum();
        wait_for(&c, &served.url, "/apns/report", "every token finished", |_, r| {
            r["accepted"].as_u64() == Some(accepted) && r["pending"].as_u64() == Some(0)
        })
        .await;
        // Every "job done" line is written before the report shows it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.logs("job done").len() < JOBS {
            assert!(Instant::now() < deadline, "only {} job done lines", served.logs("job done").len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.terminate().await;
        let lines: Vec<Value> = served.lines.lock().unwrap()[before..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let info: Vec<&Value> = lines.iter().filter(|v| v["level"] == "INFO").collect();
        let count = |m: &str| info.iter().filter(|v| v["fields"]["message"] == m).count();
        let summaries = count("summary");
        let others: Vec<&str> = info
            .iter()
            .filter_map(|v| v["fields"]["message"].as_str())
            .filter(|m| !matches!(*m, "job accepted" | "job done" | "summary"))
            .collect();
        eprintln!(
            "{JOBS} jobs ({accepted} tokens): {} info lines after start ({} job accepted, {} job done, {summaries} summaries, {} others: {others:?})",
            info.len(),
            count("job accepted"),
            count("job done"),
            others.len()
        );
        assert_eq!((count("job accepted"), count("job done")), (JOBS, JOBS));
        assert_eq!(count("job progress"), 0, "progress is at debug");
        assert!(
            info.len() - summaries <= 2 * JOBS + 20,
            "{} info lines for {JOBS} jobs: {others:?}",
            info.len()
        );
    })
    .await
    .unwrap();
}
