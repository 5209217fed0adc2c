//! An OAuth 2.0 access token traded at a token endpoint and cached for every
//! request, written once for the platforms that use one: FCM v1 (a service
//! account's JWT assertion, `fcm/auth.rs`) and Huawei Push Kit (the client
//! credentials grant, `hms/auth.rs`). A platform says how its grant is asked
//! for and how its refusal is read (a [`Grantor`]); [`TokenCache`] keeps the
//! token until shortly before it expires, and [`ask`] is what every grant
//! does at the endpoint: a form POSTed, `{"access_token","expires_in"}` read
//! back.
//!
//! Concurrent callers that find the cache stale wait on one refresh instead
//! of each asking the token endpoint (single flight), and a burst of
//! rejections of the same token causes one refresh: [`TokenCache::invalidate`]
//! only drops the token that was rejected. Neither the token nor the grant's
//! secret is ever logged.
//!
//! With a shared backend (`redis`), [`TokenCache::share`] makes the cluster
//! use one access token per credential key: a refresh first looks at the
//! cluster's, and only the gateway holding the mint lock asks the endpoint.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus::IntCounter;

use crate::shared_credential::{
    Clock, Credential, Decision, LOCK_HOLD, SharedCredentials, SystemClock,
};

/// Renew this long before `expires_in` at most.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(300);
/// After a failed refresh, callers within this window get the same error
/// rather than hammering a token endpoint that just failed.
pub const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// Why no access token was obtained, alike on every platform; a platform's
/// own error adds what is its own (how its endpoint refuses, a bad key).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint could not be reached or did not answer in time.
    #[error("cannot reach the token endpoint {uri}: {source}")]
    Transport {
        /// `token_uri`.
        uri: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint answered 200 without a usable token.
    #[error("the token endpoint {uri} answered without a usable access token")]
    BadAnswer {
        /// `token_uri`.
        uri: String,
    },
    /// A refresh failed moments ago; not retried yet.
    #[error("access token unavailable (last refresh failed: {message})")]
    Held {
        /// The failure's text.
        message: String,
        /// Whether that failure was a refusal (see [`GrantError::is_refusal`]).
        refusal: bool,
    },
}

impl TokenError {
    /// True when this holds back a refusal: the others are no answer from
    /// the endpoint or a bad one, not the endpoint saying no.
    pub fn is_refusal(&self) -> bool {
        matches!(self, TokenError::Held { refusal: true, .. })
    }
}

/// What the cache needs of a platform's error: it carries [`TokenError`]'s
/// cases, and it tells a refusal from a blip.
pub trait GrantError: From<TokenError> + std::fmt::Display + Send {
    /// True when the token endpoint itself said no: a configuration problem
    /// an operator must hear about, not a network blip.
    fn is_refusal(&self) -> bool;
}

/// How one platform obtains an access token: what it sends its token
/// endpoint and how it reads the answer.
pub trait Grantor: Send + Sync {
    /// Why no access token was obtained: the platform's own reasons and
    /// [`TokenError`]'s.
    type Error: GrantError;

    /// The platform's name in log lines (`FCM`, `HMS`).
    const PLATFORM: &'static str;

    /// Asks the token endpoint once: the `authorization` header value
    /// (`Bearer <token>`) and how long it lives.
    fn fetch(&self) -> impl Future<Output = Result<(HeaderValue, Duration), Self::Error>> + Send;
}

#[derive(Default)]
struct Cache {
    current: Option<Held>,
    /// The last refresh failure: when, its text, and whether it was a refusal.
    failure: Option<(Instant, String, bool)>,
}

/// The bearer header, when it was granted, when to renew it and when it
/// expires (ms, by the token's clock).
struct Held {
    value: HeaderValue,
    granted_at_ms: u64,
    renew_at_ms: u64,
    expires_at_ms: u64,
}

impl Held {
    /// The held token as the cluster's shared store keeps it.
    fn credential(&self) -> Option<Credential> {
        Some(Credential {
            value: self.value.to_str().ok()?.to_owned(),
            minted_at_ms: self.granted_at_ms,
            renew_at_ms: self.renew_at_ms,
            expires_at_ms: self.expires_at_ms,
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The cached access token of one grant (one service account, one app).
pub struct TokenCache<G> {
    grantor: G,
    /// The cluster-wide key of this token.
    key: String,
    cache: Mutex<Cache>,
    /// Held while one caller refreshes; the others wait, then reuse its result.
    refresh: tokio::sync::Mutex<()>,
    refreshes: IntCounter,
    obtained: AtomicBool,
    clock: Arc<dyn Clock>,
    shared: OnceLock<SharedCredentials>,
}

impl<G: std::fmt::Debug> std::fmt::Debug for TokenCache<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("grantor", &self.grantor)
            .finish_non_exhaustive()
    }
}

impl<G: Grantor> TokenCache<G> {
    /// A token source asking through `grantor`, shared in a cluster under
    /// `key` (`<platform>:<whose>`); every grant obtained counts on
    /// `refreshes`.
    pub fn over(grantor: G, key: String, refreshes: IntCounter) -> Self {
        Self {
            grantor,
            key,
            cache: Mutex::new(Cache::default()),
            refresh: tokio::sync::Mutex::new(()),
            refreshes,
            obtained: AtomicBool::new(false),
            clock: Arc::new(SystemClock),
            shared: OnceLock::new(),
        }
    }

    /// How this token is asked for.
    pub fn grantor(&self) -> &G {
        &self.grantor
    }

    /// The same token source reading `clock` for the token's age (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses the cluster's access token from now on (once; later calls are
    /// ignored).
    pub fn share(&self, shared: SharedCredentials) {
        let _ = self.shared.set(shared);
    }

    /// The cluster-wide key of this token.
    pub fn credential_key(&self) -> String {
        self.key.clone()
    }

    /// True once any access token was granted: the credentials work.
    pub fn obtained(&self) -> bool {
        self.obtained.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        crate::floor::lock(&self.cache)
    }

    /// The held token while it is not due for renewal.
    fn fresh(&self) -> Option<HeaderValue> {
        let now = self.clock.now_ms();
        match &self.lock().current {
            Some(held) if now < held.renew_at_ms => Some(held.value.clone()),
            _ => None,
        }
    }

    /// The held token while it has not expired (due for renewal or not).
    fn usable(&self) -> Option<HeaderValue> {
        let now = self.clock.now_ms();
        match &self.lock().current {
            Some(held) if now < held.expires_at_ms => Some(held.value.clone()),
            _ => None,
        }
    }

    fn adopt(&self, c: &Credential) -> Option<HeaderValue> {
        let value = HeaderValue::from_str(&c.value).ok()?;
        let mut cache = self.lock();
        cache.current = Some(Held {
            value: value.clone(),
            granted_at_ms: c.minted_at_ms,
            renew_at_ms: c.renew_at_ms,
            expires_at_ms: c.expires_at_ms,
        });
        cache.failure = None;
        self.obtained.store(true, Ordering::Relaxed);
        Some(value)
    }

    /// The `authorization` header value (`Bearer <token>`), refreshing first
    /// when the cached token is due or was invalidated.
    pub async fn header(&self) -> Result<HeaderValue, G::Error> {
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let _refreshing = self.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        if let Some((at, message, refusal)) = &self.lock().failure
            && at.elapsed() < FAILURE_HOLD
        {
            return Err(TokenError::Held {
                message: message.clone(),
                refusal: *refusal,
            }
            .into());
        }
        if let Some(result) = self.via_cluster().await {
            return result;
        }
        self.grant().await
    }

    /// With a shared token: the cluster's, or the one we mint under its lock.
    /// `None`: ask the token endpoint ourselves (no shared store, or it
    /// cannot be used).
    async fn via_cluster(&self) -> Option<Result<HeaderValue, G::Error>> {
        let shared = self.shared.get()?;
        let key = &self.key;
        let waited = Instant::now();
        loop {
            let ours = self.lock().current.as_ref().and_then(Held::credential);
            match shared.decide(key, ours.as_ref()).await {
                Ok(Decision::Use(c)) => return self.adopt(&c).map(Ok),
                Ok(Decision::Mint) => {
                    let result = self.grant().await;
                    if result.is_ok() {
                        let held = self.lock().current.as_ref().and_then(Held::credential);
                        if let Some(held) = held
                            && let Err(e) = shared.publish(key, &held).await
                        {
                            tracing::warn!(
                                error = %e,
                                "cannot store the shared {} access token",
                                G::PLATFORM
                            );
                        }
                    }
                    return Some(result);
                }
                Ok(Decision::Wait) => {
                    // Another gateway is asking the token endpoint; the token
                    // we hold still works (renewal starts well before expiry).
                    if let Some(value) = self.usable() {
                        return Some(Ok(value));
                    }
                    if waited.elapsed() > LOCK_HOLD {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::debug!(
                        error = %e,
                        "cannot read the shared {} access token",
                        G::PLATFORM
                    );
                    return None;
                }
            }
        }
    }

    /// Asks the token endpoint and caches the answer.
    async fn grant(&self) -> Result<HeaderValue, G::Error> {
        let asked_at = self.clock.now_ms();
        match self.grantor.fetch().await {
            Ok((value, lifetime)) => {
                // Renew 5 minutes early, or 10% of the lifetime for short-lived
                // tokens, counted from when we asked so a slow answer errs early.
                let margin = MAX_RENEW_MARGIN.min(lifetime / 10);
                let mut cache = self.lock();
                cache.current = Some(Held {
                    value: value.clone(),
                    granted_at_ms: asked_at,
                    renew_at_ms: asked_at.saturating_add(ms(lifetime - margin)),
                    expires_at_ms: asked_at.saturating_add(ms(lifetime)),
                });
                cache.failure = None;
                self.obtained.store(true, Ordering::Relaxed);
                self.refreshes.inc();
                Ok(value)
            }
            Err(e) => {
                self.lock().failure = Some((Instant::now(), e.to_string(), e.is_refusal()));
                Err(e)
            }
        }
    }

    /// Drops `rejected` so the next [`TokenCache::header`] refreshes. A token
    /// already replaced is left alone, so a burst of rejections causes one
    /// refresh.
    pub fn invalidate(&self, rejected: &HeaderValue) {
        let mut cache = self.lock();
        if cache
            .current
            .as_ref()
            .is_some_and(|held| held.value == *rejected)
        {
            cache.current = None;
        }
    }
}

/// What a token endpoint answered a grant request (RFC 6749 section 5): a
/// token, or a refusal for the platform to read. No answer, or a 200 without
/// a usable token, is a [`TokenError`]. (No `Debug`: it would print the token.)
pub enum Answer {
    /// 200 with a non-empty `access_token`: the header value `Bearer <token>`
    /// (not marked sensitive: the platform decides) and `expires_in`, if given.
    Granted {
        /// `Bearer <token>`.
        value: HeaderValue,
        /// Seconds, as the endpoint said.
        expires_in: Option<u64>,
    },
    /// Any other status; the platform reads its refusal from the body.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The answer's body.
        body: bytes::Bytes,
    },
}

#[derive(serde::Deserialize)]
struct Grant {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// POSTs a grant request (`form`, already form-encoded) to the token
/// endpoint `uri` through `client`.
pub async fn ask(client: &reqwest::Client, uri: &str, form: String) -> Result<Answer, TokenError> {
    let transport = |source| TokenError::Transport {
        uri: uri.to_owned(),
        source,
    };
    let bad = || TokenError::BadAnswer {
        uri: uri.to_owned(),
    };
    let response = client
        .post(uri)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(transport)?;
    if status != 200 {
        return Ok(Answer::Refused { status, body });
    }
    let grant: Grant = serde_json::from_slice(&body).map_err(|_| bad())?;
    let token = grant
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(bad)?;
    let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad())?;
    Ok(Answer::Granted {
        value,
        expires_in: grant.expires_in,
    })
}

/// At most the first `max` characters of `s` (a refusal's description, which
/// the endpoint writes).
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_credential::ManualClock;
    use crate::shared_credential::memory::MemoryStore;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;

    /// A token endpoint answering from a script: each ask takes the next
    /// answer (a lifetime, or a failure that is a refusal or not), an hour's
    /// token once the script is spent.
    #[derive(Debug)]
    struct Script {
        /// The tokens' prefix: `Bearer <name><n>` for the n-th ask.
        name: &'static str,
        answers: Mutex<VecDeque<Result<Duration, bool>>>,
        asked: AtomicUsize,
    }

    #[derive(Debug)]
    struct Failed {
        message: String,
        refusal: bool,
    }

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl From<TokenError> for Failed {
        fn from(e: TokenError) -> Self {
            Failed {
                message: e.to_string(),
                refusal: e.is_refusal(),
            }
        }
    }

    impl GrantError for Failed {
        fn is_refusal(&self) -> bool {
            self.refusal
        }
    }

    impl Grantor for Script {
        type Error = Failed;

        const PLATFORM: &'static str = "test";

        async fn fetch(&self) -> Result<(HeaderValue, Duration), Failed> {
            let n = self.asked.fetch_add(1, Ordering::Relaxed) + 1;
            // Let concurrent callers pile up behind this refresh.
            tokio::task::yield_now().await;
            let answer = crate::floor::lock(&self.answers).pop_front();
            match answer.unwrap_or(Ok(Duration::from_secs(3600))) {
                Ok(lifetime) => Ok((
                    HeaderValue::from_str(&format!("Bearer {}{n}", self.name)).expect("ascii"),
                    lifetime,
                )),
                Err(refusal) => Err(Failed {
                    message: format!("ask {n} failed"),
                    refusal,
                }),
            }
        }
    }

    fn cache(
        name: &'static str,
        answers: &[Result<Duration, bool>],
        clock: &Arc<ManualClock>,
    ) -> TokenCache<Script> {
        let script = Script {
            name,
            answers: Mutex::new(answers.iter().cloned().collect()),
            asked: AtomicUsize::new(0),
        };
        let refreshes = IntCounter::new("r", "r").expect("counter");
        TokenCache::over(script, "test:one".to_owned(), refreshes).with_clock(clock.clone())
    }

    fn asked(token: &TokenCache<Script>) -> usize {
        token.grantor().asked.load(Ordering::Relaxed)
    }

    async fn header(token: &TokenCache<Script>) -> String {
        let value = token.header().await.expect("granted");
        value.to_str().expect("ascii").to_owned()
    }

    #[tokio::test]
    async fn renewal_starts_5_minutes_early_or_at_nine_tenths_counted_from_the_ask() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        let token = cache("t", &[Ok(hour), Ok(minute), Ok(minute)], &clock);
        assert!(!token.obtained());
        assert_eq!(header(&token).await, "Bearer t1");
        assert!(token.obtained());
        clock.advance(Duration::from_secs(55 * 60) - Duration::from_millis(1));
        assert_eq!(header(&token).await, "Bearer t1");
        clock.advance(Duration::from_millis(1));
        assert_eq!(header(&token).await, "Bearer t2");
        // A minute's token is renewed a tenth (6 s) early, not 5 minutes early.
        clock.advance(Duration::from_secs(54) - Duration::from_millis(1));
        assert_eq!(header(&token).await, "Bearer t2");
        clock.advance(Duration::from_millis(1));
        assert_eq!(header(&token).await, "Bearer t3");
        assert_eq!(asked(&token), 3);
        assert_eq!(token.refreshes.get(), 3);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let token = Arc::new(cache("t", &[], &clock));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let token = token.clone();
                tokio::spawn(async move { header(&token).await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.expect("join"), "Bearer t1");
        }
        assert_eq!(asked(&token), 1);
    }

    #[tokio::test]
    async fn a_failure_is_held_for_a_second_with_its_refusal() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let token = cache("t", &[Err(true)], &clock);
        let e = token.header().await.expect_err("refused");
        assert_eq!((e.message.as_str(), e.refusal), ("ask 1 failed", true));
        let again = token.header().await.expect_err("held");
        assert_eq!(
            (again.message.as_str(), again.refusal),
            (
                "access token unavailable (last refresh failed: ask 1 failed)",
                true
            )
        );
        assert_eq!(asked(&token), 1);
        assert!(!token.obtained());
        tokio::time::sleep(FAILURE_HOLD).await;
        assert_eq!(header(&token).await, "Bearer t2");
        assert!(token.obtained());
    }

    #[tokio::test]
    async fn invalidate_drops_only_the_rejected_token() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let token = cache("t", &[], &clock);
        let first = token.header().await.expect("granted");
        token.invalidate(&HeaderValue::from_static("Bearer someone-else"));
        assert_eq!(token.header().await.expect("cached"), first);
        token.invalidate(&first);
        token.invalidate(&first);
        assert_eq!(header(&token).await, "Bearer t2");
        assert_eq!(header(&token).await, "Bearer t2");
        assert_eq!(asked(&token), 2);
    }

    /// Two gateways over one store: one mints and publishes, the other uses
    /// it without asking; when it is due, whoever looks first renews it for
    /// both, and one that finds the lock taken keeps the token it holds.
    #[tokio::test]
    async fn a_cluster_asks_once_per_renewal() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let shared =
            SharedCredentials::new(Arc::new(MemoryStore::new(clock.clone())), clock.clone());
        let (a, b) = (cache("a", &[], &clock), cache("b", &[], &clock));
        a.share(shared.clone());
        b.share(shared.clone());
        assert_eq!(a.credential_key(), "test:one");
        assert_eq!(header(&a).await, "Bearer a1");
        assert_eq!(header(&b).await, "Bearer a1");
        assert!(b.obtained());
        assert_eq!((asked(&a), asked(&b)), (1, 0));
        assert_eq!(b.refreshes.get(), 0);

        clock.advance(Duration::from_secs(55 * 60));
        assert_eq!(header(&b).await, "Bearer b1");
        assert_eq!(header(&a).await, "Bearer b1");
        assert_eq!((asked(&a), asked(&b)), (1, 1));

        // Due again while another gateway holds the mint lock: still valid, kept.
        clock.advance(Duration::from_secs(55 * 60));
        assert!(matches!(
            shared.decide("test:one", None).await,
            Ok(Decision::Mint)
        ));
        assert_eq!(header(&a).await, "Bearer b1");
        assert_eq!((asked(&a), asked(&b)), (1, 1));
    }
}
