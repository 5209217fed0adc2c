//! The API's listener: one accept loop for plain HTTP and HTTPS, HTTP/1.1 and
//! HTTP/2 (hyper-util's auto builder), with the limits that keep strangers
//! from holding the gateway's resources:
//!
//! - `server.max_connections`: a semaphore around accept. A connection above
//!   it is closed at once, so the process never runs out of file descriptors
//!   and the connections already open (a `/healthz` probe among them) go on.
//! - `server.header_timeout_s`: a connection must finish its TLS handshake and
//!   send its first request head within it; later heads too (hyper's HTTP/1
//!   header read timeout).
//! - `server.body_timeout_s`: a request body that stops arriving for this
//!   long fails with [`BodyTimedOut`] (the API answers 408 and, since the
//!   body was not read to its end, the connection closes).
//! - `server.idle_timeout_s`: a connection with no request in flight and no
//!   byte either way for this long is closed (HTTP/2: GOAWAY first). A
//!   request is in flight until its answer's body is sent, so a quiet
//!   streaming answer (gRPC `WatchJob`) is not idleness.
//! - HTTP/2: `server.max_streams_per_connection` concurrent streams; a client
//!   that cancels more than 200 requests and more than it lets be answered
//!   (rapid reset, CVE-2023-44487: HEADERS then RST_STREAM) is disconnected.
//! - HTTP/2 keepalive ([`Keepalive`], the gRPC listener's): a PING after a
//!   quiet interval; a client that does not answer it in time is disconnected.
//!
//! The soft `RLIMIT_NOFILE` is raised to the hard limit at start
//! ([`raise_fd_limit`]), and `max_connections` is held below it.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tower::ServiceExt as _;

/// Timeouts and limits of the listener (validated `[server]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `server.header_timeout_s`.
    pub header_timeout: Duration,
    /// `server.body_timeout_s`.
    pub body_timeout: Duration,
    /// `server.idle_timeout_s`.
    pub idle_timeout: Duration,
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.max_streams_per_connection`.
    pub max_streams_per_connection: u32,
    /// HTTP/2 keepalive PINGs; `None`: none (the HTTP API's listener).
    pub keepalive: Option<Keepalive>,
}

/// HTTP/2 keepalive: a PING when nothing has arrived from the client for
/// `interval`; no answer within `timeout` closes the connection. An answered
/// PING is traffic, so it also keeps the connection from counting as idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before a PING.
    pub interval: Duration,
    /// How long the PING may go unanswered.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_streams_per_connection: 128,
            keepalive: None,
        }
    }
}

/// File descriptors kept free beyond `max_connections`: upstream
/// connections, the listener, files, Redis.
const FD_RESERVE: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both; returns
/// the soft limit now in force (`None` when it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    use rlimit::Resource;
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE");
            return None;
        }
    };
    if soft < hard
        && let Err(e) = Resource::NOFILE.set(hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the soft RLIMIT_NOFILE to the hard limit");
        return Some(soft);
    }
    let now = Resource::NOFILE.get().map(|(s, _)| s).unwrap_or(soft);
    tracing::info!(
        soft_before = soft,
        hard,
        soft_now = now,
        "open-file limit (RLIMIT_NOFILE)"
    );
    Some(now)
}

/// `max_connections`, lowered if the open-file limit could not hold it.
pub fn effective_max_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    if configured > room {
        tracing::warn!(
            configured,
            used = room,
            fd_limit = limit,
            "server.max_connections is above what the open-file limit leaves room for; using the lower number"
        );
        room
    } else {
        configured
    }
}

/// A request body stopped arriving for `server.body_timeout_s`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving for {0:?} (server.body_timeout_s)")]
pub struct BodyTimedOut(pub Duration);

/// Serves `app` on `listener` (over TLS when `tls` is set) until `stop` fires,
/// then lets open connections finish (HTTP/2 gets GOAWAY) and returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let max = effective_max_connections(limits.max_connections, raise_fd_limit());
    let permits = Arc::new(Semaphore::new(max));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(limits.keepalive.map(|k| k.interval));
    if let Some(k) = limits.keepalive {
        builder.http2().keep_alive_timeout(k.timeout);
    }
    let builder = Arc::new(builder);
    let (closing, closing_rx) = watch::channel(false);
    let mut refused_logged: Option<Instant> = None;
    let mut refused_since_log: u64 = 0;
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over server.max_connections: closed at once. Logged at most
            // once a second so a flood does not flood the log too.
            drop(tcp);
            refused_since_log += 1;
            if refused_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(
                    max_connections = max,
                    refused = refused_since_log,
                    "connection refused: server.max_connections reached"
                );
                refused_logged = Some(Instant::now());
                refused_since_log = 0;
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits,
            closing: closing_rx.clone(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            connection.run(tcp, peer, acceptor).await;
            drop(permit);
        });
    }
    // Stop: open connections finish what they carry, then close.
    let _ = closing.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.header_timeout, permits.acquire_many(all)).await;
    Ok(())
}

/// One client connection and what it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: axum::Router,
    limits: Limits,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn run(
        self,
        tcp: TcpStream,
        peer: std::net::SocketAddr,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let activity = Arc::new(Activity::new());
        let io = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        match acceptor {
            None => self.serve(io, activity, peer).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => self.serve(stream, activity, peer).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(self, io: I, activity: Arc<Activity>, peer: std::net::SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            builder,
            app,
            limits,
            mut closing,
        } = self;
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = InFlight::start(seen.clone());
            let request = request
                .map(|body| axum::body::Body::new(TimeoutBody::new(body, limits.body_timeout)));
            let answer = app.clone().oneshot(request);
            async move {
                // In flight until its body is sent (or dropped): a
                // streaming answer (gRPC's WatchJob) keeps the connection
                // from counting as idle while it lasts.
                let answer = answer.await;
                let in_flight = in_flight.answered();
                answer.map(|response| {
                    response.map(|inner| {
                        axum::body::Body::new(Answering {
                            inner,
                            _in_flight: in_flight,
                        })
                    })
                })
            }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut shutting_down = false;
        let mut hard_deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = activity.next_check(&limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "API connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(next.into()) => {
                    match activity.verdict(&limits) {
                        Verdict::Fine => {}
                        Verdict::NoRequest => {
                            tracing::debug!(%peer, "closed: no request within server.header_timeout_s");
                            return;
                        }
                        Verdict::Idle if !shutting_down => {
                            tracing::debug!(%peer, "closing: idle for server.idle_timeout_s");
                            conn.as_mut().graceful_shutdown();
                            shutting_down = true;
                            hard_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        }
                        Verdict::Idle => {}
                    }
                }
                _ = async { match hard_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                } } => {
                    // A closing connection whose client does not answer GOAWAY.
                    return;
                }
                _ = activity.abusive.notified() => {
                    if activity.is_abusive() {
                        tracing::warn!(
                            %peer,
                            cancelled = activity.cancelled.load(Ordering::Relaxed),
                            answered = activity.answered.load(Ordering::Relaxed),
                            "closed: the client cancels most of its requests (HTTP/2 rapid reset)"
                        );
                        return;
                    }
                }
                changed = closing.changed(), if !shutting_down => {
                    if changed.is_err() || *closing.borrow() {
                        conn.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                }
            }
        }
    }
}

// === impl Activity ===

/// When a connection last moved a byte, and whether a request is in flight.
struct Activity {
    opened: Instant,
    /// Milliseconds since `opened` of the last byte read or written.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    any_request: AtomicBool,
    /// Requests answered, and requests the client dropped before their answer
    /// (HTTP/2 RST_STREAM, or a closed socket).
    answered: AtomicU64,
    cancelled: AtomicU64,
    /// Woken when `cancelled` crosses the rapid-reset line.
    abusive: tokio::sync::Notify,
}

/// A connection whose client cancelled more than this many requests, and
/// more than it let be answered, is closed: HEADERS then RST_STREAM costs the
/// client nothing and the gateway a task each (rapid reset, CVE-2023-44487).
/// h2's own guard only counts streams reset before the server accepted them.
const MAX_CANCELLED: u64 = 200;

enum Verdict {
    Fine,
    /// No first request head within the header timeout.
    NoRequest,
    /// Nothing in flight and no byte for the idle timeout.
    Idle,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            any_request: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            abusive: tokio::sync::Notify::new(),
        }
    }

    fn is_abusive(&self) -> bool {
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        cancelled > MAX_CANCELLED && cancelled > self.answered.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// The next moment a verdict could change.
    fn next_check(&self, limits: &Limits) -> Instant {
        let idle_at = self.last() + limits.idle_timeout;
        if self.any_request.load(Ordering::Acquire) {
            idle_at
        } else {
            idle_at.min(self.opened + limits.header_timeout)
        }
        .max(Instant::now() + Duration::from_millis(10))
    }

    fn verdict(&self, limits: &Limits) -> Verdict {
        if !self.any_request.load(Ordering::Acquire)
            && self.opened.elapsed() >= limits.header_timeout
        {
            return Verdict::NoRequest;
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.last().elapsed() >= limits.idle_timeout
        {
            return Verdict::Idle;
        }
        Verdict::Fine
    }
}

/// Counts a request in flight for as long as it lives (dropped when answered,
/// or when an HTTP/2 client resets the stream), and whether it was answered.
struct InFlight {
    activity: Arc<Activity>,
    answered: bool,
}

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.any_request.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Self {
            activity,
            answered: false,
        }
    }

    /// Marks the request answered (its head is being sent): dropped from
    /// now on, it counts as answered, not cancelled.
    fn answered(mut self) -> Self {
        self.answered = true;
        self
    }
}

/// An answer's body, holding its request's [`InFlight`] until it is sent.
struct Answering {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        a.touch();
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.answered {
            a.answered.fetch_add(1, Ordering::Relaxed);
        } else {
            a.cancelled.fetch_add(1, Ordering::Relaxed);
            if a.is_abusive() {
                a.abusive.notify_one();
            }
        }
    }
}

// === impl Tracked ===

/// A socket that notes when a byte last moved.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === impl TimeoutBody ===

/// A request body that fails with [`BodyTimedOut`] when no frame arrives for
/// `timeout` while it is being read. A handler that never reads the body
/// starts no timer.
pub struct TimeoutBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimeoutBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> HttpBody for TimeoutBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
