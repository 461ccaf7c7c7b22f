//! What one client can take from the API: a request runs at most `request_timeout`, and at most
//! `max_concurrent` run at once; past that the answer is a quick 503, never a queue. Health
//! checks are exempt, so an orchestrator does not restart a server that is only busy.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiContext;
use super::error::ApiError;

/// The API's limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// How long a request may take to be answered (a streamed export: to start).
    pub request_timeout: Duration,
    /// Requests answered at once; more get a 503 at once.
    pub max_concurrent: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self { request_timeout: Duration::from_secs(30), max_concurrent: 64 }
    }
}

/// The limits with the slots they count.
#[derive(Debug)]
pub struct Limiter {
    limits: ApiLimits,
    slots: Arc<Semaphore>,
}

impl Limiter {
    pub fn new(limits: ApiLimits) -> Self {
        let max_concurrent = limits.max_concurrent.max(1);
        Self { limits: ApiLimits { max_concurrent, ..limits }, slots: Arc::new(Semaphore::new(max_concurrent)) }
    }

    pub fn limits(&self) -> ApiLimits {
        self.limits
    }

    /// A streamed body may run this long in all (a slow reader keeps its slot no longer).
    fn stream_deadline(&self) -> Duration {
        self.limits.request_timeout.saturating_mul(10)
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(ApiLimits::default())
    }
}

fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Middleware: a slot or a 503 at once, then the answer within the timeout or a 503.
pub async fn guard(State(context): State<ApiContext>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let limiter = context.limiter.clone();
    let Ok(permit) = limiter.slots.clone().try_acquire_owned() else {
        // Debug only: under a flood this would be a line per refusal; metrics count the 503s.
        tracing::debug!(limit = limiter.limits.max_concurrent, "request refused: the API is at its concurrency limit");
        return ApiError::Busy(limiter.limits.max_concurrent).into_response();
    };
    match tokio::time::timeout(limiter.limits.request_timeout, next.run(request)).await {
        Ok(response) => hold_while_streaming(response, permit, limiter.stream_deadline()),
        Err(_) => ApiError::RequestTimeout(limiter.limits.request_timeout.as_secs().max(1)).into_response(),
    }
}

/// A body of known size is already whole: the slot is free. A streamed one (an export) keeps
/// its slot until it ends, and is cut off (an error, never a silently short file) at `deadline`.
fn hold_while_streaming(response: Response, permit: OwnedSemaphorePermit, deadline: Duration) -> Response {
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let stream = until_deadline(body.into_data_stream(), tokio::time::Instant::now() + deadline);
    let held = stream.map(move |chunk| {
        let _slot = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(held))
}

type Chunk = Result<Bytes, axum::Error>;

/// The chunks of `stream` until `deadline`; then one error, which aborts the response.
fn until_deadline(
    stream: impl Stream<Item = Chunk> + Send + Unpin + 'static,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Chunk> + Send {
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        tokio::select! {
            chunk = stream.next() => chunk.map(|chunk| (chunk, Some(stream))),
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!("a streamed answer ran past its deadline and was cut off");
                let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "the answer took too long to send");
                Some((Err(axum::Error::new(error)), None))
            }
        }
    })
}
