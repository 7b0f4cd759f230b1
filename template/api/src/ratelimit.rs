//! Rate limits, kept in Redis so that every worker and every replica shares
//! them: a request budget per client address (fixed one-minute windows,
//! reserved by each process in chunks, see [`RateLimiter::request`]), and a
//! failed-login throttle per account, whatever address the attempts come
//! from.
//!
//! Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers); over a limit,
//! 429 with `Retry-After`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use poem::http::{HeaderMap, HeaderValue};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::config::RedisSettings;
use crate::error::{ApiError, Dependency};
use crate::metrics::DependencyFailed;
use crate::requests::ClientIp;
use crate::sessions::bounded;

/// Where a client stands against a limit in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    /// Counted so far in this window.
    pub used: u64,
    /// Seconds until the window resets.
    pub reset: u64,
}

impl Standing {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Past the limit: the request just counted is one too many.
    pub fn over(&self) -> bool {
        self.used > self.limit
    }

    /// Nothing left: the next one would be one too many.
    pub fn spent(&self) -> bool {
        self.used >= self.limit
    }

    /// The `RateLimit-*` headers saying where the client stands.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", self.limit),
            ("ratelimit-remaining", self.remaining()),
            ("ratelimit-reset", self.reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }

    /// The 429 for a client over the limit.
    pub fn refusal(self, detail: &'static str) -> ApiError {
        ApiError::TooManyRequests {
            detail,
            standing: self,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests per client address per minute; 0 turns the budget off.
    pub per_minute: u64,
    /// Failed logins per account within `login_window`.
    pub login_failures: u64,
    pub login_window: Duration,
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: ConnectionManager,
    prefix: String,
    limits: Limits,
    timeout: Duration,
    credits: Arc<Mutex<HashMap<IpAddr, Held>>>,
}

/// What this process holds of an address's budget (see
/// [`RateLimiter::request`]).
enum Held {
    /// Requests it may still make, reserved ahead.
    Credit {
        left: u64,
        /// The shared count once this credit is spent, at most the limit.
        used_when_spent: u64,
        window_ends: Instant,
    },
    /// A reservation is on its way; meanwhile requests count one by one, so
    /// that a burst does not reserve the budget many times over.
    Reserving { since: Instant },
}

/// What a request does about its budget.
enum Take {
    Spent(Standing),
    Reserve,
    CountOne,
}

/// Whole seconds, rounded up: `RateLimit-Reset` and `Retry-After`.
fn seconds(left: Duration) -> u64 {
    left.as_millis().div_ceil(1000) as u64
}

/// Addresses held, past which finished ones are swept out.
const CREDITS_KEPT: usize = 10_000;

impl RateLimiter {
    pub fn new(redis: ConnectionManager, settings: &RedisSettings, limits: Limits) -> RateLimiter {
        RateLimiter {
            redis,
            prefix: settings.key_prefix.clone(),
            limits,
            timeout: settings.timeout(),
            credits: Arc::default(),
        }
    }

    /// Counts one request from `ip` against its budget.
    ///
    /// A busy address would cost a Redis round trip per request, more than
    /// the request itself for the cheap ones, so each process reserves a
    /// twentieth of the budget at a time and spends it locally. The shared
    /// count is of what was reserved, so no address ever gets past its limit;
    /// it may be refused a little early while another worker holds credit it
    /// has not used. Small budgets (under 40) are counted one by one.
    pub async fn request(&self, ip: IpAddr) -> Result<Standing, ApiError> {
        let limit = self.limits.per_minute;
        let reserve = match self.take(ip, limit) {
            Take::Spent(standing) => return Ok(standing),
            Take::CountOne => false,
            Take::Reserve => true,
        };
        let key = format!("{}rate:ip:{ip}", self.prefix);
        let window = Duration::from_secs(60);
        if !reserve {
            return self.count(&key, limit, window, 1).await;
        }
        let chunk = (limit / 20).max(1);
        let reserved = self.add(&key, window, chunk).await;
        let mut credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        credits.remove(&ip);
        let (reserved, window_left) = reserved?;
        let before = reserved.saturating_sub(chunk);
        let granted = limit.saturating_sub(before).min(chunk);
        let reset = seconds(window_left);
        if granted == 0 {
            // Over: the refusal says so, and nothing is held.
            return Ok(Standing {
                limit,
                used: limit + 1,
                reset,
            });
        }
        if granted > 1 {
            if credits.len() >= CREDITS_KEPT {
                let now = Instant::now();
                credits.retain(|_, held| match held {
                    Held::Credit {
                        left, window_ends, ..
                    } => *left > 0 && *window_ends > now,
                    Held::Reserving { since } => now - *since < Duration::from_secs(1),
                });
            }
            let held = Held::Credit {
                left: granted - 1,
                used_when_spent: before + granted,
                window_ends: Instant::now() + window_left,
            };
            credits.insert(ip, held);
        }
        Ok(Standing {
            limit,
            used: before + 1,
            reset,
        })
    }

    fn take(&self, ip: IpAddr, limit: u64) -> Take {
        let mut credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match credits.get_mut(&ip) {
            Some(Held::Credit {
                left,
                used_when_spent,
                window_ends,
            }) if *left > 0 && *window_ends > now => {
                *left -= 1;
                Take::Spent(Standing {
                    limit,
                    used: *used_when_spent - *left,
                    reset: seconds(*window_ends - now),
                })
            }
            // A reservation abandoned (its request cancelled) expires.
            Some(Held::Reserving { since }) if now - *since < self.timeout * 2 => Take::CountOne,
            _ => {
                credits.insert(ip, Held::Reserving { since: now });
                Take::Reserve
            }
        }
    }

    /// Runs `check` (a password check that yields `Some` on success) under
    /// `username`'s failed-login throttle. While the account is throttled it
    /// is refused unchecked, so guessing from many addresses gains nothing;
    /// a failure is counted, and a success clears the count.
    pub async fn password_check<T>(
        &self,
        username: &str,
        check: impl Future<Output = Result<Option<T>, ApiError>>,
    ) -> Result<Option<T>, ApiError> {
        let key = format!("{}rate:login:{}", self.prefix, username.to_lowercase());
        let (limit, window) = (self.limits.login_failures, self.limits.login_window);
        let standing = self.count(&key, limit, window, 0).await?;
        if standing.spent() {
            tracing::warn!(
                failures = standing.used,
                "password check refused: account throttled"
            );
            return Err(
                standing.refusal("too many failed attempts for this account; try again later")
            );
        }
        let passed = check.await?;
        if passed.is_some() {
            let mut redis = self.redis.clone();
            let _: i64 = bounded(self.timeout, redis.del(&key)).await?;
        } else {
            self.count(&key, limit, window, 1).await?;
        }
        Ok(passed)
    }

    pub fn budget_enabled(&self) -> bool {
        self.limits.per_minute > 0
    }

    /// Adds `add` to the window's counter (created with the window's
    /// length) and says where the client stands.
    async fn count(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        add: u64,
    ) -> Result<Standing, ApiError> {
        let (count, window_left) = self.add(key, window, add).await?;
        Ok(Standing {
            limit,
            used: count,
            reset: seconds(window_left),
        })
    }

    /// Adds `add` to the window's counter; returns the count and the time
    /// left in the window.
    async fn add(
        &self,
        key: &str,
        window: Duration,
        add: u64,
    ) -> Result<(u64, Duration), ApiError> {
        let mut redis = self.redis.clone();
        let mut call = COUNT.prepare_invoke();
        call.key(key).arg(add).arg(window.as_millis() as u64);
        let (count, ttl_ms): (u64, i64) =
            bounded(self.timeout, call.invoke_async(&mut redis)).await?;
        let window_left = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
        Ok((count, window_left))
    }
}

/// KEYS: the counter. ARGV: how much to add, the window in milliseconds.
/// Returns the count and the milliseconds left in the window.
static COUNT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
        local count
        if tonumber(ARGV[1]) > 0 then
            count = redis.call('INCRBY', KEYS[1], ARGV[1])
            if redis.call('PTTL', KEYS[1]) < 0 then
                redis.call('PEXPIRE', KEYS[1], ARGV[2])
            end
        else
            count = tonumber(redis.call('GET', KEYS[1]) or '0')
        end
        local ttl = redis.call('PTTL', KEYS[1])
        if ttl < 0 then
            ttl = 0
        end
        return {count, ttl}
        ",
    )
});

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
                        tracing::warn!(error = %err, "rate limit not checked");
                        unchecked = true;
                        None
                    }
                }
            }
            _ => None,
        };
        let mut response = match standing {
            Some(standing) if standing.over() => {
                let refusal = standing.refusal("too many requests from this address");
                return Ok(refusal.into_response());
            }
            _ => self.inner.call(request).await?.into_response(),
        };
        // A tighter limit the handler answered with (the login throttle)
        // keeps its own headers.
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
