//! Accepting connections, with the limits that keep abusive clients from
//! hurting others: a cap on open connections, a deadline for a request's
//! headers (slowloris), a cap on header count and size (header floods),
//! and a graceful drain on shutdown.
//!
//! `axum::serve` offers none of these knobs, so connections are served
//! with hyper-util's builder directly.

use super::HttpLimits;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Largest request head (request line plus headers) accepted; beyond it
/// hyper answers 431.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Headers per request hyper accepts when no limit is set (its
/// `DEFAULT_MAX_HEADERS`), the same as [`super::HttpLimits`]' default.
const HYPER_MAX_HEADERS: usize = 100;

/// Pending connections the kernel may queue before `accept` (capped by
/// `net.core.somaxconn`); bursts of new clients wait here instead of
/// retrying their SYN a second later.
const BACKLOG: u32 = 4096;

/// Binds `addr` with a deep accept queue.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets every
/// connection finish its in-flight request and waits for them.
pub async fn run(
    listener: TcpListener,
    app: super::App,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_BYTES);
    // hyper parses into stack arrays of its default size unless a limit is
    // set; a set one, even the same, costs every request a copy of two
    // arrays that size.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connection tasks, waited for at shutdown.
    let connections = tokio_util::task::TaskTracker::new();
    // Connections that have not sent a byte yet are closed at shutdown
    // rather than waited for (hyper does not know them yet).
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    back_off(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the cap, a new connection is closed at once rather than
        // queued: memory and descriptors stay bounded whatever arrives.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!(crate::telemetry::HTTP_CONNECTIONS_REFUSED).increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = super::idle::Activity::new();
        let service =
            TowerToHyperService::new(super::idle::Tracked::new(app.clone(), activity.clone()));
        let builder = builder.clone();
        let header_timeout = limits.header_timeout;
        let stopping = stopping.clone();
        connections.spawn(async move {
            let _open = OpenConnection::new(permit);
            // hyper starts its header timer only once it knows the
            // protocol; a peer that never sends a byte is closed here.
            let sends = tokio::select! {
                sends = sends_within(&stream, header_timeout) => sends,
                () = stopping.cancelled() => false,
            };
            if !sends {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            // The header deadline and the drain at shutdown (see `idle`):
            // hyper's own header timeout would arm a timer per request.
            super::idle::serve_until_idle(
                std::pin::pin!(connection),
                |connection| connection.graceful_shutdown(),
                &activity,
                header_timeout,
                &stopping,
            )
            .await;
        });
    }
    drop(listener);
    // Every connection finishes what it is serving, then closes.
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn sends_within(stream: &tokio::net::TcpStream, deadline: Duration) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        tokio::time::timeout(deadline, stream.peek(&mut probe)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Out of descriptors (or memory): wait a little instead of spinning; a
/// failed handshake of one client is just skipped.
async fn back_off(err: &std::io::Error) {
    let pause = match err.raw_os_error() {
        Some(23 | 24 | 12 | 105) => {
            tracing::warn!(error = %err, "cannot accept connections; pausing");
            Duration::from_millis(50)
        }
        _ => Duration::ZERO,
    };
    tokio::time::sleep(pause).await;
}

/// Holds a connection's slot and keeps the open-connections gauge true.
struct OpenConnection(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl OpenConnection {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics::gauge!(crate::telemetry::HTTP_CONNECTIONS).increment(1.0);
        OpenConnection(permit)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::HTTP_CONNECTIONS).decrement(1.0);
    }
}
