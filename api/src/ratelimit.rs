//! Rate limits, kept in Redis so that every worker and every replica shares
//! them: fixed-window [`Counters`] that any module may count against, and
//! the request budget per client address built on them (one-minute windows,
//! reserved by each process in chunks, see [`RateLimiter::request`]; the
//! middleware that applies it is in `budget.rs`).
//!
//! Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers); over a limit,
//! 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use poem::http::{HeaderMap, HeaderName, HeaderValue};
use redis::{AsyncCommands, Script};

use crate::storage::redis::Redis;
use crate::storage::StorageError;

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

    /// The `RateLimit-*` headers saying where the client stands.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        // Names made once: one from a `&str` is copied onto the heap on
        // every answer.
        const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
        const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
        for (name, value) in [
            (LIMIT, self.limit),
            (REMAINING, self.remaining()),
            (RESET, self.reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}

/// Fixed-window counters in Redis: each key counts up from its first use
/// and is gone when its window ends.
#[derive(Clone)]
pub struct Counters {
    redis: Redis,
}

impl Counters {
    pub fn new(redis: Redis) -> Self {
        Counters { redis }
    }

    /// The service's prefix before `name`, for this module's keys.
    pub fn key_prefix(&self, name: &str) -> String {
        self.redis.key_prefix(name)
    }

    /// Adds `add` to the window's counter (created with the window's
    /// length) and says where the client stands.
    pub async fn count(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        add: u64,
    ) -> Result<Standing, StorageError> {
        let (count, window_left) = self.add(key, window, add).await?;
        Ok(Standing {
            limit,
            used: count,
            reset: seconds(window_left),
        })
    }

    /// Ends the counter's window now.
    pub async fn clear(&self, key: &str) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        let _: i64 = self.redis.bounded("DEL", redis.del(key)).await?;
        Ok(())
    }

    /// Adds `add` to the window's counter; returns the count and the time
    /// left in the window.
    async fn add(
        &self,
        key: &str,
        window: Duration,
        add: u64,
    ) -> Result<(u64, Duration), StorageError> {
        let mut redis = self.redis.connection();
        let mut call = COUNT.prepare_invoke();
        call.key(key).arg(add).arg(window.as_millis() as u64);
        let (count, ttl_ms): (u64, i64) = self
            .redis
            .bounded("EVALSHA", call.invoke_async(&mut redis))
            .await?;
        let window_left = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
        Ok((count, window_left))
    }
}

/// The request budget per client address.
#[derive(Clone)]
pub struct RateLimiter {
    counters: Counters,
    /// Requests per client address per minute; 0 turns the budget off.
    per_minute: u64,
    prefix: String,
    timeout: Duration,
    credits: Arc<Mutex<Credits>>,
}

/// What this process holds of addresses' budgets: at most [`CREDITS_KEPT`]
/// addresses, so that a flood of distinct addresses cannot grow it.
#[derive(Default)]
struct Credits {
    held: HashMap<IpAddr, Held>,
    /// When expired entries were last swept out: at most once a second,
    /// so that no request pays for a sweep under the lock every request
    /// takes.
    swept: Option<Instant>,
}

impl Credits {
    /// Room for one more address, sweeping out what has expired if full
    /// and no sweep ran within the last second.
    fn has_room(&mut self, now: Instant, reservation_timeout: Duration) -> bool {
        if self.held.len() < CREDITS_KEPT {
            return true;
        }
        if self
            .swept
            .is_none_or(|swept| now - swept >= Duration::from_secs(1))
        {
            self.swept = Some(now);
            self.held.retain(|_, held| match held {
                Held::Credit {
                    left, window_ends, ..
                } => *left > 0 && *window_ends > now,
                Held::Reserving { since } => now - *since < reservation_timeout,
            });
        }
        self.held.len() < CREDITS_KEPT
    }
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

/// Addresses this process holds credit for, at most. Past it, a new
/// address is counted one request at a time in Redis (as correct, one round
/// trip each) until held ones expire.
pub const CREDITS_KEPT: usize = 10_000;

/// The block a budget is kept for: an IPv4 address as is, an IPv6 one by
/// its /64, the smallest block a client is usually given, so that rotating
/// through it gains nothing. (An IPv4-mapped IPv6 address is its IPv4 one.)
pub(crate) fn client_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

impl RateLimiter {
    pub fn new(redis: Redis, per_minute: u64) -> RateLimiter {
        RateLimiter {
            prefix: redis.key_prefix("rate:ip:"),
            timeout: redis.timeout(),
            counters: Counters::new(redis),
            per_minute,
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
    pub async fn request(&self, ip: IpAddr) -> Result<Standing, StorageError> {
        let ip = client_block(ip);
        let limit = self.per_minute;
        let reserve = match self.take(ip, limit) {
            Take::Spent(standing) => return Ok(standing),
            Take::CountOne => false,
            Take::Reserve => true,
        };
        let key = format!("{}{ip}", self.prefix);
        let window = Duration::from_secs(60);
        if !reserve {
            return self.counters.count(&key, limit, window, 1).await;
        }
        let chunk = (limit / 20).max(1);
        let reserved = self.counters.add(&key, window, chunk).await;
        let mut credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        credits.held.remove(&ip);
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
        // The slot its reservation took is free again, unless a sweep took
        // it meanwhile and others filled it.
        if granted > 1 && credits.held.len() < CREDITS_KEPT {
            let held = Held::Credit {
                left: granted - 1,
                used_when_spent: before + granted,
                window_ends: Instant::now() + window_left,
            };
            credits.held.insert(ip, held);
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
        let reservation_timeout = self.timeout * 2;
        if !credits.held.contains_key(&ip) && !credits.has_room(now, reservation_timeout) {
            return Take::CountOne;
        }
        match credits.held.get_mut(&ip) {
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
            Some(Held::Reserving { since }) if now - *since < reservation_timeout => Take::CountOne,
            _ => {
                credits.held.insert(ip, Held::Reserving { since: now });
                Take::Reserve
            }
        }
    }

    pub fn budget_enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// How many addresses this process holds credit or a reservation for.
    pub fn addresses_held(&self) -> usize {
        let credits = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        credits.held.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_kept_by_their_64_and_ipv4_as_they_are() {
        let block = |ip: &str| client_block(ip.parse().unwrap()).to_string();
        assert_eq!(block("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(block("2001:db8:1:2::"), "2001:db8:1:2::");
        assert_eq!(block("203.0.113.7"), "203.0.113.7");
        assert_eq!(block("::ffff:203.0.113.7"), "203.0.113.7");
    }
}
