//! Sessions: opaque UUID v4 tokens in Redis, each key holding its user's id
//! and expiring on its own. One multiplexed connection serves the process.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use uuid::Uuid;

use crate::config::RedisSettings;
use crate::error::{ApiError, Dependency};

/// An authenticated request's session.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub token: Uuid,
    pub user_id: i64,
}

#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
}

impl SessionStore {
    /// Connects lazily: the service starts, and reports not-ready, while Redis
    /// is down, and the manager reconnects by itself when Redis returns.
    pub fn new(settings: &RedisSettings, ttl: Duration) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout()))
            .set_response_timeout(Some(settings.timeout()))
            // Reconnect attempts are cheap; a long backoff would stretch an
            // outage past the moment Redis is back.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(SessionStore {
            redis: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: settings.key_prefix.clone(),
            ttl,
            timeout: settings.timeout(),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, token: Uuid) -> String {
        format!("{}session:{}", self.prefix, token.as_hyphenated())
    }

    /// Starts a session for `user_id` under a fresh token. `SET NX` means a
    /// token is only ever created here, never adopted from a client.
    pub async fn create(&self, user_id: i64) -> Result<Session, ApiError> {
        let token = Uuid::new_v4();
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EX(self.ttl.as_secs()));
        let mut redis = self.redis.clone();
        let created: bool = self
            .bounded(redis.set_options(self.key(token), user_id, options))
            .await?;
        if !created {
            // 122 random bits colliding means the RNG is broken: refuse.
            return Err(ApiError::internal("session token collision"));
        }
        Ok(Session { token, user_id })
    }

    /// The session for `token`, if it exists and has not expired.
    pub async fn find(&self, token: Uuid) -> Result<Option<Session>, ApiError> {
        let mut redis = self.redis.clone();
        let user_id: Option<i64> = self.bounded(redis.get(self.key(token))).await?;
        Ok(user_id.map(|user_id| Session { token, user_id }))
    }

    /// Ends the session at once.
    pub async fn revoke(&self, token: Uuid) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        let _removed: i64 = self.bounded(redis.del(self.key(token))).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        let _: String = self.bounded(redis.ping()).await?;
        Ok(())
    }

    /// Caps every Redis call, including the reconnects the manager does
    /// underneath it, so an outage is a prompt 503, never a hang.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_elapsed) => {
                tracing::warn!(timeout = ?self.timeout, "session store did not answer in time");
                Err(ApiError::Unavailable(Dependency::Redis))
            }
        }
    }
}

/// A Redis failure is an outage when the connection is at fault, else a bug.
impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
        {
            tracing::warn!(error = %err, "session store failed");
            ApiError::Unavailable(Dependency::Redis)
        } else {
            ApiError::internal(err)
        }
    }
}
