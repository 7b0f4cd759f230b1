//! Sessions: opaque UUID v4 tokens in Redis. Each session is a hash (its
//! user, when it began and was last used, from where) that expires after
//! SESSION_IDLE_SECONDS without use and at the latest SESSION_TTL_SECONDS
//! after login. Per user a set holds their tokens, so that all of a user's
//! sessions can be listed or ended at once.
//!
//! Several keys change together, so those changes are Lua scripts, which
//! Redis runs atomically. (They build key names inside, so this needs a
//! single Redis, not a Redis Cluster.)
//!
//! Tokens never reach a log: where a session must be named, it is by
//! [`public_id`], a hash that cannot be turned back into the token.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blake2::{Blake2s256, Digest};
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::names;
use crate::storage::redis::Redis;
use crate::storage::StorageError;

/// An authenticated request's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: Uuid,
    pub user_id: i64,
    /// The user's name as cached ([`super::names`]) when the session was
    /// checked, read in the same round trip: `/getName` needs no other.
    pub cached_name: Option<String>,
}

/// What a user may see of one of their sessions: never the token.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    /// Unix time in milliseconds.
    pub created: u64,
    pub last_seen: u64,
    pub client_ip: Option<String>,
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// From login, whatever the use.
    pub absolute: Duration,
    /// Without a request.
    pub idle: Duration,
}

#[derive(Clone)]
pub struct SessionStore {
    redis: Redis,
    /// Key prefixes of sessions and of users' sets of tokens.
    sessions: String,
    users: String,
    /// Where cached names are, read along with each session check.
    names: String,
    lifetimes: Lifetimes,
}

/// A session's name in logs and in `GET /v2/sessions`: 16 hex digits of a
/// BLAKE2s hash of its token.
pub fn public_id(token: Uuid) -> String {
    let digest = Blake2s256::digest(token.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Unix time in milliseconds: sessions begun within the same second still
/// sort, and lifetimes end on time.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl SessionStore {
    pub fn new(redis: Redis, lifetimes: Lifetimes) -> Self {
        SessionStore {
            sessions: redis.key_prefix("session:"),
            users: redis.key_prefix("user-sessions:"),
            names: names::key_prefix(&redis),
            redis,
            lifetimes,
        }
    }

    /// How long a new token lives if it is not used.
    pub fn expires_in(&self) -> Duration {
        self.lifetimes.idle.min(self.lifetimes.absolute)
    }

    fn key(&self, token: Uuid) -> String {
        format!("{}{}", self.sessions, token.as_hyphenated())
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}{user_id}", self.users)
    }

    /// Starts a session for `user_id` under a fresh token. `HSETNX` means a
    /// token is only ever created here, never adopted from a client.
    pub async fn create(
        &self,
        user_id: i64,
        client_ip: Option<IpAddr>,
    ) -> Result<Session, StorageError> {
        let token = Uuid::new_v4();
        let mut redis = self.redis.connection();
        let mut call = CREATE.prepare_invoke();
        call.key(self.key(token))
            .key(self.user_key(user_id))
            .arg(user_id)
            .arg(self.expires_in().as_millis() as u64)
            .arg(token.as_hyphenated().to_string())
            .arg(now_ms())
            .arg(client_ip.map(|ip| ip.to_string()).unwrap_or_default())
            .arg(self.lifetimes.absolute.as_millis() as u64);
        let created: bool = self.redis.bounded(call.invoke_async(&mut redis)).await?;
        if !created {
            // 122 random bits colliding means the RNG is broken: refuse.
            return Err(StorageError::invariant("session token collision"));
        }
        Ok(Session {
            token,
            user_id,
            cached_name: None,
        })
    }

    /// The session for `token`, if it exists and has not expired; using it
    /// restarts its idle count (never past its absolute lifetime).
    pub async fn find(&self, token: Uuid) -> Result<Option<Session>, StorageError> {
        let mut redis = self.redis.connection();
        let mut call = TOUCH.prepare_invoke();
        call.key(self.key(token))
            .arg(now_ms())
            .arg(self.lifetimes.idle.as_millis() as u64)
            .arg(self.lifetimes.absolute.as_millis() as u64)
            .arg(&self.names);
        let found: Option<(i64, Option<String>)> =
            self.redis.bounded(call.invoke_async(&mut redis)).await?;
        Ok(found.map(|(user_id, cached_name)| Session {
            token,
            user_id,
            cached_name,
        }))
    }

    /// The user's live sessions, oldest first.
    pub async fn list(&self, user_id: i64) -> Result<Vec<(Uuid, SessionInfo)>, StorageError> {
        let mut redis = self.redis.connection();
        let tokens: Vec<String> = self
            .redis
            .bounded(redis.smembers(self.user_key(user_id)))
            .await?;
        let mut sessions = Vec::new();
        for token in tokens.iter().filter_map(|t| Uuid::try_parse(t).ok()) {
            let fields: (Option<u64>, Option<u64>, Option<String>) = self
                .redis
                .bounded(redis.hmget(self.key(token), &["created", "seen", "ip"]))
                .await?;
            if let (Some(created), Some(last_seen), ip) = fields {
                let client_ip = ip.filter(|ip| !ip.is_empty());
                let info = SessionInfo {
                    id: public_id(token),
                    created,
                    last_seen,
                    client_ip,
                };
                sessions.push((token, info));
            }
        }
        sessions.sort_by_key(|(_, info)| info.created);
        Ok(sessions)
    }

    /// Ends the session at once.
    pub async fn revoke(&self, token: Uuid) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        let mut call = REVOKE.prepare_invoke();
        call.key(self.key(token))
            .arg(&self.users)
            .arg(token.as_hyphenated().to_string());
        let _removed: i64 = self.redis.bounded(call.invoke_async(&mut redis)).await?;
        Ok(())
    }

    /// Ends every session of `user_id` at once; returns how many there were.
    pub async fn revoke_all(&self, user_id: i64) -> Result<u64, StorageError> {
        let mut redis = self.redis.connection();
        let mut call = REVOKE_ALL.prepare_invoke();
        call.key(self.user_key(user_id)).arg(&self.sessions);
        self.redis.bounded(call.invoke_async(&mut redis)).await
    }
}

/// KEYS: the session, the user's set of tokens. ARGV: user id, first TTL,
/// token, now, client address, absolute lifetime (times in milliseconds).
/// The set lives as long as the longest a session could.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HSETNX', KEYS[1], 'user_id', ARGV[1]) == 0 then
            return 0
        end
        redis.call('HSET', KEYS[1], 'created', ARGV[4], 'seen', ARGV[4], 'ip', ARGV[5])
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        redis.call('SADD', KEYS[2], ARGV[3])
        if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[6]) then
            redis.call('PEXPIRE', KEYS[2], ARGV[6])
        end
        return 1
        ",
    )
});

/// KEYS: the session. ARGV: now, idle timeout, absolute lifetime (all in
/// milliseconds), the prefix of cached names. Returns the user id and their
/// cached name (or nil), or nil when the session is gone or past its
/// lifetime.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local found = redis.call('HMGET', KEYS[1], 'user_id', 'created')
        if not found[1] then
            return false
        end
        local left = tonumber(found[2]) + tonumber(ARGV[3]) - tonumber(ARGV[1])
        if left <= 0 then
            redis.call('DEL', KEYS[1])
            return false
        end
        redis.call('HSET', KEYS[1], 'seen', ARGV[1])
        redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), left))
        return {found[1], redis.call('HGET', ARGV[4] .. found[1], 'name')}
        ",
    )
});

/// KEYS: the session. ARGV: the prefix of users' token sets, the token.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local user_id = redis.call('HGET', KEYS[1], 'user_id')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_are_short_stable_and_do_not_contain_the_token() {
        let token = Uuid::new_v4();
        let id = public_id(token);
        assert_eq!(id.len(), 16);
        assert_eq!(id, public_id(token));
        assert_ne!(id, public_id(Uuid::new_v4()));
        assert!(!token.simple().to_string().contains(&id));
    }
}
