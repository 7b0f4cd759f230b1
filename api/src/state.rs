//! What every request handler of the core shares: the PostgreSQL pool, the
//! Redis connection, the per-address rate limiter and the metrics. Modules
//! keep their own state beside it (`extension.rs`).

use std::ops::Deref;
use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::metrics::{Metrics, Snapshot};
use crate::ratelimit::RateLimiter;
use crate::storage::postgres::{self, DatabaseSettings, DbSetupError};
use crate::storage::redis::{Redis, RedisSettings, RedisSetupError};

/// Cheap to clone: one `Arc`. poem's `data` gives every request a clone,
/// and some handles (the rate limiter's script) would copy on clone.
#[derive(Clone)]
pub struct AppState(Arc<CoreHandles>);

pub struct CoreHandles {
    pub db: Pool,
    pub redis: Redis,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Database(#[from] DbSetupError),
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
}

impl Deref for AppState {
    type Target = CoreHandles;

    fn deref(&self) -> &CoreHandles {
        &self.0
    }
}

impl AppState {
    /// Connects to nothing yet: both PostgreSQL and Redis are reached lazily.
    /// `rate_limit_per_minute` is each client address's budget.
    pub fn new(
        database: &DatabaseSettings,
        redis: &RedisSettings,
        rate_limit_per_minute: u64,
    ) -> Result<Self, StateError> {
        let redis = Redis::new(redis)?;
        Ok(AppState(Arc::new(CoreHandles {
            db: postgres::pool(database)?,
            limiter: RateLimiter::new(redis.clone(), rate_limit_per_minute),
            redis,
            metrics: Metrics::default(),
        })))
    }

    /// This process's metrics, with the levels read off its pools now.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.metrics.snapshot();
        postgres::pool_gauges(&self.db, &mut snapshot);
        snapshot
    }
}
