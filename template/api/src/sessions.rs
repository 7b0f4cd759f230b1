//! Sessions: opaque UUID v4 tokens in Redis, each key holding its user's id
//! and expiring on its own, and per user a set of their tokens, so that all
//! of a user's sessions can be ended at once (a role change, an admin's
//! revocation). One multiplexed connection serves the process.
//!
//! Several keys change together, so those changes are Lua scripts, which
//! Redis runs atomically. (They build key names inside, so this needs a
//! single Redis, not a Redis Cluster.)

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
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

    fn session_prefix(&self) -> String {
        format!("{}session:", self.prefix)
    }

    fn key(&self, token: Uuid) -> String {
        format!("{}{}", self.session_prefix(), token.as_hyphenated())
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}user-sessions:{user_id}", self.prefix)
    }

    /// Starts a session for `user_id` under a fresh token. `SET NX` means a
    /// token is only ever created here, never adopted from a client.
    pub async fn create(&self, user_id: i64) -> Result<Session, ApiError> {
        let token = Uuid::new_v4();
        let ttl = self.ttl.as_secs();
        let mut redis = self.redis.clone();
        let mut call = CREATE.prepare_invoke();
        call.key(self.key(token))
            .key(self.user_key(user_id))
            .arg(user_id)
            .arg(ttl)
            .arg(token.as_hyphenated().to_string());
        let created: bool = self.bounded(call.invoke_async(&mut redis)).await?;
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
        let mut call = REVOKE.prepare_invoke();
        call.key(self.key(token))
            .arg(format!("{}user-sessions:", self.prefix))
            .arg(token.as_hyphenated().to_string());
        let _removed: i64 = self.bounded(call.invoke_async(&mut redis)).await?;
        Ok(())
    }

    /// Ends every session of `user_id` at once; returns how many there were.
    pub async fn revoke_all(&self, user_id: i64) -> Result<u64, ApiError> {
        let mut redis = self.redis.clone();
        let mut call = REVOKE_ALL.prepare_invoke();
        call.key(self.user_key(user_id)).arg(self.session_prefix());
        self.bounded(call.invoke_async(&mut redis)).await
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

/// KEYS: the session, the user's set of tokens. ARGV: user id, TTL, token.
/// The set lives as long as its longest-lived session.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
            return 0
        end
        redis.call('SADD', KEYS[2], ARGV[3])
        if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) then
            redis.call('EXPIRE', KEYS[2], ARGV[2])
        end
        return 1
        ",
    )
});

/// KEYS: the session. ARGV: the prefix of users' token sets, the token.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local user_id = redis.call('GET', KEYS[1])
        if not user_id then
            return 0
        end
        redis.call('DEL', KEYS[1])
        redis.call('SREM', ARGV[1] .. user_id, ARGV[2])
        return 1
        ",
    )
});

/// KEYS: the user's set of tokens. ARGV: the prefix of session keys.
static REVOKE_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local tokens = redis.call('SMEMBERS', KEYS[1])
        local ended = 0
        for _, token in ipairs(tokens) do
            ended = ended + redis.call('DEL', ARGV[1] .. token)
        end
        redis.call('DEL', KEYS[1])
        return ended
        ",
    )
});

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
