//! The disk store's idempotency claims through its seam: a claim is written
//! in the commit of its job, a second claim of the key writes nothing (no
//! job either), and after a restart the key still names the first job.
//!
//! What it leaves out: the process dying mid-commit (redb's own crash tests,
//! and `tests/durable.rs`' kill -9 of the real binary).

use std::sync::Arc;
use std::time::Duration;

use super::DiskStore;
use crate::job::{Catalog, JobId, Platform, TokenList};
use crate::queue::Admission;
use crate::store::{
    AdmitError, Claim, Found, IdemKey, Kept, NewJob, Owner, Store, Submission, Taken,
};

static PLATFORMS: [Platform; 1] = [crate::job::test::PLATFORM];

fn open(dir: &std::path::Path) -> Arc<DiskStore> {
    DiskStore::open(
        dir,
        10,
        100,
        Duration::from_secs(3600),
        Arc::new(Admission::new(1_000)),
        Catalog::new(&PLATFORMS),
    )
    .expect("the store opens")
}

fn job(tokens: &[&str]) -> NewJob {
    let mut list = TokenList::default();
    for t in tokens {
        list.push(t.as_bytes());
    }
    NewJob {
        platform: crate::job::test::PLATFORM,
        app: Arc::from("default"),
        fields: b"{}".to_vec(),
        message: None,
        tokens: list,
        expires_at: None,
        delay: None,
        notif_id: None,
    }
}

fn claim(key: &IdemKey, job: JobId) -> Claim {
    Claim {
        key: key.clone(),
        owner: Owner::new(),
        kept: Kept {
            fingerprint: None,
            status: 202,
            body: format!(r#"{{"job":"{job}"}}"#),
            job: Some(job.to_string()),
            lease_until_ms: None,
            expires_at_ms: u64::MAX,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_kept_with_its_job_and_a_second_claim_writes_nothing() {
    let dir = std::env::temp_dir().join(format!(
        "pushgate-disk-claims-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let key = IdemKey::new("00", "order-1").expect("a key");
    let (first, second) = (JobId::new(), JobId::new());
    {
        let store = open(&dir);
        let _ = store.recover();
        let one = Submission::one(first, job(&["a", "b"])).with_claim(claim(&key, first));
        assert_eq!(store.admit(&one).await.expect("admitted").len(), 1);
        let two = Submission::one(second, job(&["c"])).with_claim(claim(&key, second));
        match store.admit(&two).await {
            Err(AdmitError::KeyTaken(Taken::Kept(kept))) => {
                assert!(kept.is_bound_to(first), "{kept:?}");
            }
            other => panic!("a second claim of the key: {other:?}"),
        }
        store.close().await;
    }
    // A restart: the first job and its key, and nothing of the second.
    let store = open(&dir);
    let recovered = store.recover();
    let ids: Vec<JobId> = recovered.jobs.iter().map(|j| j.handoff.id).collect();
    assert_eq!(ids, vec![first]);
    match store.reserve(&key, Owner::new()).await.expect("read") {
        Found::Kept(kept) => assert!(kept.is_bound_to(first), "{kept:?}"),
        other => panic!("the key after a restart: {other:?}"),
    }
    store.close().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
