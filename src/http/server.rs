//! Serving connections: HTTP/1.1 through hyper with the defences `axum::serve` does
//! not have. A client must finish sending its request headers within
//! `http.header_read_timeout_seconds` — this also closes a kept-alive connection
//! that sends no next request in that time — and a connection on which nothing
//! moves in either direction for `http.idle_timeout_seconds` (a client that stops
//! reading our answer, or stops sending its body) is closed. Together with the
//! per-request timeout and the early `Content-Length` check (middleware.rs), slow
//! clients cannot hold connections and file descriptors open for long.
use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Connection-level timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

impl From<&HttpConfig> for Timeouts {
    fn from(h: &HttpConfig) -> Self {
        Self {
            header_read: Duration::from_secs(u64::from(h.header_read_timeout_seconds)),
            idle: Duration::from_secs(u64::from(h.idle_timeout_seconds)),
        }
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then let requests in
/// flight finish. Each request carries `ConnectInfo<SocketAddr>` (the peer).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Every connection task holds a clone; when all are gone, everything finished.
    let (done_tx, done_rx) = watch::channel(());
    let mut stopping = stop_rx.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stopping) => break,
        };
        let router = router.clone();
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header_read);
            let io = TokioIo::new(IdleTimeout::new(stream, timeouts.idle));
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended");
                    }
                }
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(done);
        });
    }
    drop(listener);
    drop(done_rx);
    done_tx.closed().await;
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means: stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A TCP stream that fails with `TimedOut` once a read or write has waited `idle`
/// since the last byte moved either way.
struct IdleTimeout {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleTimeout {
    fn new(inner: TcpStream, idle: Duration) -> Self {
        Self { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    fn check<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx),
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn pair(idle: Duration) -> (IdleTimeout, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (IdleTimeout::new(server, idle), client)
    }

    #[tokio::test]
    async fn a_connection_silent_both_ways_fails_after_the_idle_time_and_traffic_keeps_it_open() {
        let idle = Duration::from_millis(300);
        let (mut server, mut client) = pair(idle).await;
        // Bytes arriving in time keep it open.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
        }
        // Then nothing: the read fails with TimedOut after about `idle`.
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_our_answer_is_cut_off() {
        let (mut server, _client_never_reads) = pair(Duration::from_millis(300)).await;
        let chunk = vec![0u8; 256 * 1024];
        let started = std::time::Instant::now();
        let err = loop {
            // Fills the socket buffers, then blocks until the idle time passes.
            if let Err(e) = server.write_all(&chunk).await {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never blocked");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
