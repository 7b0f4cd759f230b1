//! The request deadline: REQUEST_TIMEOUT_MS, the most any request may take.

use std::time::Duration;

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::error::ApiError;

/// Middleware: no request takes longer than `timeout`. Past it the work is
/// dropped (a query waiting on a frozen PostgreSQL with it) and the client
/// gets a 503 problem document with `Retry-After`, instead of waiting for
/// nginx to give up a minute later. Every wait inside a request is bounded
/// by this, whatever code a service adds.
pub(crate) struct RequestDeadline {
    pub(crate) timeout: Duration,
}

impl<E: Endpoint> Middleware<E> for RequestDeadline {
    type Output = RequestDeadlineEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestDeadlineEndpoint {
            inner,
            timeout: self.timeout,
        }
    }
}

pub(crate) struct RequestDeadlineEndpoint<E> {
    inner: E,
    timeout: Duration,
}

impl<E: Endpoint> Endpoint for RequestDeadlineEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        match tokio::time::timeout(self.timeout, self.inner.call(request)).await {
            Ok(answered) => answered.map(IntoResponse::into_response),
            Err(_) => {
                let millis = self.timeout.as_millis() as u64;
                tracing::warn!(timeout_ms = millis, "request cut off at its deadline");
                Err(ApiError::TimedOut(millis).into())
            }
        }
    }
}
