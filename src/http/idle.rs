//! The header deadline, kept per connection: a connection that has no
//! request in progress (none being handled, no response body still being
//! sent) for `header_timeout` is closed, gracefully (see
//! [`serve_until_idle`]). That covers a client that never
//! finishes its request's headers (slowloris) and an idle keep-alive
//! connection, like hyper's own header timeout, which however arms a timer
//! for every request; this one re-arms only when it fires.

use axum::body::Body;
use axum::response::Response;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A response body at most this long, of known length, is written at once:
/// the request is over when its response is produced. Longer or streamed
/// bodies keep the connection busy until they are sent (or dropped).
const WRITTEN_AT_ONCE: u64 = 64 << 10;

/// What one connection is doing.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// When the connection will have been idle for `limit`, unless a
    /// request is in progress.
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.opened + since + limit)
    }
}

/// One request in progress; its end is recorded when dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `connection` until it ends. Once it has been idle for `limit`,
/// or when `stopping` fires, it is asked to close gracefully with `close`
/// (HTTP/1: at once when no request is under way; HTTP/2: a GOAWAY naming
/// the last stream it will answer, then closed when those are done), so a
/// client never loses a request it sent just then. A connection still
/// open and idle `limit` after that (a request head that never completes)
/// is dropped, which closes the socket.
pub async fn serve_until_idle<C: Future>(
    mut connection: Pin<&mut C>,
    close: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limit: Duration,
    stopping: &tokio_util::sync::CancellationToken,
) {
    let mut closing_since: Option<Instant> = None;
    loop {
        let wake_at = match (activity.idle_deadline(limit), closing_since) {
            (Some(at), Some(since)) => at.max(since + limit),
            (Some(at), None) => at,
            (None, _) => Instant::now() + limit,
        };
        tokio::select! {
            biased;
            _ = connection.as_mut() => return,
            () = stopping.cancelled(), if closing_since.is_none() => {
                close(connection.as_mut());
                closing_since = Some(Instant::now());
            }
            () = tokio::time::sleep_until(wake_at.into()) => {
                let now = Instant::now();
                if activity.idle_deadline(limit).is_none_or(|at| at > now) {
                    continue;
                }
                match closing_since {
                    None => {
                        tracing::debug!("closing a connection idle for {limit:?}");
                        close(connection.as_mut());
                        closing_since = Some(now);
                    }
                    Some(since) if since + limit <= now => return,
                    Some(_) => {}
                }
            }
        }
    }
}

/// The app, with each request's span recorded in the connection's [`Activity`].
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for Tracked<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        TrackedFuture {
            busy: Some(Busy::begin(&self.activity)),
            inner: self.inner.call(request),
        }
    }
}

pub struct TrackedFuture<F> {
    inner: F,
    busy: Option<Busy>,
}

impl<F> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        let busy = self.busy.take();
        let small = axum::body::HttpBody::size_hint(response.body())
            .exact()
            .is_some_and(|length| length <= WRITTEN_AT_ONCE);
        Poll::Ready(Ok(match (small, busy) {
            (false, Some(busy)) => {
                response.map(|body| Body::new(SendingBody { body, _busy: busy }))
            }
            _ => response,
        }))
    }
}

/// A response body still being sent: the request is not over yet.
struct SendingBody {
    body: Body,
    _busy: Busy,
}

impl axum::body::HttpBody for SendingBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
