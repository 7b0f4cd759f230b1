//! The per-address request budget (`crate::ratelimit`), as middleware on
//! every request but the probes.

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::error::ApiError;
use crate::metrics::DependencyFailed;
use crate::ratelimit::RateLimiter;
use crate::requests::ClientIp;
use crate::storage::Dependency;

/// Middleware: the per-address budget on every request but the probes. If
/// Redis is away the request goes on (the budget is a brake, not a lock;
/// what needs Redis answers 503 by itself) and the outage is logged.
pub struct RequestBudget {
    limiter: RateLimiter,
}

impl RequestBudget {
    pub fn new(limiter: RateLimiter) -> Self {
        RequestBudget { limiter }
    }
}

impl<E: Endpoint> Middleware<E> for RequestBudget {
    type Output = RequestBudgetEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestBudgetEndpoint {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

pub struct RequestBudgetEndpoint<E> {
    inner: E,
    limiter: RateLimiter,
}

impl<E: Endpoint> Endpoint for RequestBudgetEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
        let ip = request.extensions().get::<ClientIp>().map(|ip| ip.0);
        let mut unchecked = false;
        let standing = match ip {
            Some(ip) if self.limiter.budget_enabled() && !probe => {
                match self.limiter.request(ip).await {
                    Ok(standing) => Some(standing),
                    Err(err) => {
                        tracing::warn!(error = %crate::error::chain(&err), "rate limit not checked");
                        unchecked = true;
                        None
                    }
                }
            }
            _ => None,
        };
        let mut response = match standing {
            Some(standing) if standing.over() => {
                let refusal = ApiError::TooManyRequests {
                    detail: "too many requests from this address",
                    standing,
                };
                return Ok(refusal.into_response());
            }
            _ => self.inner.call(request).await?.into_response(),
        };
        // A tighter limit the handler answered with (a module's own, such as
        // a per-account throttle) keeps its own headers.
        if let Some(standing) =
            standing.filter(|_| !response.headers().contains_key("ratelimit-limit"))
        {
            standing.write_headers(response.headers_mut());
        }
        if unchecked {
            response.set_data(DependencyFailed(Dependency::Redis.label()));
        }
        Ok(response)
    }
}
