//! The one start-up path. `breakglass serve` and the integration tests' `TestServer`
//! both go through [`Server::build`] and [`Server::run`], so tests exercise exactly
//! what production runs: the router with all its layers, the client address
//! (`ConnectInfo`), the HTTP/1 connection limits (header-read and idle timeouts), the
//! delivery worker and the scheduler.
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::Instant,
};

use crate::{
    app::{App, health::SchedulerHeartbeat},
    config::Config,
    http::{AppState, build_router},
    notify,
};

/// How the server runs; everything but the scheduler period comes from `[http]`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A client must send a whole request header within this long.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// How often the scheduler runs housekeeping (expiries, drills, purges).
    pub scheduler_every: Duration,
    /// When the first scheduler tick runs (`serve`: at once, to catch up).
    pub scheduler_first_after: Duration,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl ServerOptions {
    pub fn from_config(config: &Config) -> Self {
        let h = &config.http;
        Self {
            header_read_timeout: Duration::from_secs(u64::from(h.header_read_timeout_seconds)),
            idle_timeout: Duration::from_secs(u64::from(h.idle_timeout_seconds)),
            scheduler_every: Duration::from_secs(60),
            scheduler_first_after: Duration::ZERO,
            shutdown_grace: Duration::from_secs(u64::from(h.request_timeout_seconds) + 5),
        }
    }
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    app: App,
    router: Router,
    heartbeat: Arc<SchedulerHeartbeat>,
    options: ServerOptions,
}

impl Server {
    /// Everything `serve` needs around an opened `App` (with its sink, if any) and a
    /// bound listener. Nothing runs until [`Server::run`].
    pub fn build(app: App, listener: TcpListener, options: ServerOptions) -> Self {
        let heartbeat = SchedulerHeartbeat::new(options.scheduler_every);
        let router = build_router(AppState::new(app.clone()).with_scheduler(heartbeat.clone()));
        Self { listener, app, router, heartbeat, options }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes, then stop accepting, let requests in flight
    /// finish (up to `shutdown_grace`) and stop the background tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Self { listener, app, router, heartbeat, options } = self;
        let mut background = JoinSet::new();
        background.spawn(scheduler(app.clone(), heartbeat, options.scheduler_every, options.scheduler_first_after));
        if app.has_sink() {
            background.spawn(notify::worker::run(app.clone()));
        }
        if let Some(feed) = app.root_feed() {
            background.spawn(crate::aws::feed::run(app.clone(), feed));
        }
        let posture_hours = app.config.aws.posture_interval_hours;
        if app.has_posture_reader() && posture_hours > 0 {
            background.spawn(posture_checks(app.clone(), Duration::from_secs(u64::from(posture_hours) * 3600)));
        }

        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        connections.spawn(connection(stream, remote, router.clone(), options.clone(), stopping.clone()));
                    }
                    // Out of file descriptors and the like: wait a little, keep serving.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections as we go.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let drained =
            tokio::time::timeout(options.shutdown_grace, async { while connections.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            tracing::warn!("shutdown grace period over: closing the remaining connections");
        }
        connections.shutdown().await;
        background.shutdown().await;
        Ok(())
    }
}

/// Every account's root posture, read from AWS on a fixed period (the first at once).
async fn posture_checks(app: App, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed = app.check_all_postures().await;
        tracing::info!(changed, "root posture checked");
    }
}

/// Housekeeping on a fixed period, recording each tick for `/readyz`.
async fn scheduler(app: App, heartbeat: Arc<SchedulerHeartbeat>, every: Duration, first_after: Duration) {
    heartbeat.started(app.now().unix_timestamp());
    let mut tick = tokio::time::interval_at(Instant::now() + first_after, every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = app.housekeeping().await;
        // Backups are their own step: a failed backup is announced, not a stuck scheduler.
        if let Err(e) = app.run_backup_due().await {
            tracing::warn!(error = %crate::error::chain(&e), "backup step failed");
        }
        let now = app.now().unix_timestamp();
        match outcome {
            Ok(_) => heartbeat.ticked(now, None),
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "housekeeping failed");
                heartbeat.ticked(now, Some(e.code()));
            }
        }
    }
}

/// One HTTP/1 connection: the router with the client's address, hyper's header-read
/// timeout, our idle timeout, and a graceful close on shutdown.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    options: ServerOptions,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.idle_for(options.idle_timeout) => {
                tracing::debug!(%remote, "closing a connection idle for {:?}", options.idle_timeout);
                return;
            }
            _ = stopping.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When bytes last moved on a connection (milliseconds since it opened).
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self { opened: Instant::now(), last_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A TCP stream that records activity on every read or write that moves bytes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
