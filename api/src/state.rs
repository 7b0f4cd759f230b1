//! What every request handler shares: pools, the session store, the rate
//! limiter, the name cache, the hasher.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::config::Settings;
use crate::db::{self, DbSetupError};
use crate::metrics::{Metrics, Snapshot};
use crate::names::NameCache;
use crate::password::Passwords;
use crate::ratelimit::{Limits, RateLimiter};
use crate::sessions::{Lifetimes, SessionStore};

/// Cheap to clone: every field is a handle onto shared state.
#[derive(Clone)]
pub struct AppState {
    pub db: Pool,
    pub sessions: SessionStore,
    pub limiter: RateLimiter,
    pub names: NameCache,
    pub passwords: Passwords,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Database(#[from] DbSetupError),
    #[error("REDIS_URL is invalid: {0}")]
    Redis(#[from] redis::RedisError),
}

impl AppState {
    /// Connects to nothing yet: both PostgreSQL and Redis are reached lazily.
    pub fn new(settings: Settings) -> Result<Self, StateError> {
        let lifetimes = Lifetimes {
            absolute: settings.session_ttl(),
            idle: settings.session_idle(),
        };
        let sessions = SessionStore::new(&settings.redis, lifetimes)?;
        let limits = Limits {
            per_minute: settings.rate_limit_per_minute,
            login_failures: settings.login_max_failures,
            login_window: Duration::from_secs(settings.login_failure_window_seconds),
        };
        // One Redis connection a process, shared by sessions, limits and names.
        let limiter = RateLimiter::new(sessions.connection(), &settings.redis, limits);
        let names = NameCache::new(sessions.connection(), &settings.redis);
        Ok(AppState {
            db: db::pool(&settings.database)?,
            sessions,
            limiter,
            names,
            passwords: Passwords::new(settings.hash_concurrency()),
            metrics: Metrics::default(),
            settings: Arc::new(settings),
        })
    }

    /// This process's metrics, with the levels read off its pools now.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.metrics.snapshot();
        db::pool_gauges(&self.db, &mut snapshot);
        snapshot
    }
}
