//! What every request handler shares: pools, the session store, the hasher.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::config::Settings;
use crate::db::{self, DbSetupError};
use crate::password::Passwords;
use crate::sessions::{Lifetimes, SessionStore};

/// Cheap to clone: every field is a handle onto shared state.
#[derive(Clone)]
pub struct AppState {
    pub db: Pool,
    pub sessions: SessionStore,
    pub passwords: Passwords,
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
        Ok(AppState {
            db: db::pool(&settings.database)?,
            sessions: SessionStore::new(
                &settings.redis,
                Lifetimes {
                    absolute: settings.session_ttl(),
                    idle: settings.session_idle(),
                },
            )?,
            passwords: Passwords::new(settings.hash_concurrency()),
            settings: Arc::new(settings),
        })
    }
}
