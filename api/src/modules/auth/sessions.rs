//! Sessions: opaque UUID v4 tokens in Redis. Each session is a hash (its
//! user, when it began and was last used, from where, under which
//! credential epoch) that expires after SESSION_IDLE_SECONDS without use and
//! at the latest SESSION_TTL_SECONDS after login. Per user a sorted set holds
//! their sessions by age, so that all of a user's sessions can be listed or
//! ended at once, and no user has more than SESSIONS_PER_USER (the oldest
//! ends first).
//!
//! Redis never sees a token: sessions are keyed by a BLAKE2s hash of it, so
//! key names, RDB and AOF files and `MONITOR` hold nothing a client could
//! send back. The first 16 hex digits of the hash, [`public_id`], name a
//! session in logs and listings.
//!
//! Each user's credential epoch (`users.credential_epoch`) counts password
//! and role changes and sessions ended. A session carries the epoch its
//! login read with the password hash, and Redis keeps each user's latest;
//! a session from an older epoch is refused. So a login that checked the
//! old password while it was being changed cannot outlive the change, though
//! its session is made after the change ended the others.
//!
//! Several keys change together, so those changes are Lua scripts, which
//! Redis runs atomically. (They build key names inside, so this needs a
//! single Redis, not a Redis Cluster.)

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blake2::{Blake2s256, Digest};
use redis::Script;
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

/// How long sessions live, and how many a user may have.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From login, whatever the use.
    pub absolute: Duration,
    /// Without a request.
    pub idle: Duration,
    /// Live sessions per user; a login past it ends the oldest.
    pub per_user: u32,
}

#[derive(Clone)]
pub struct SessionStore {
    redis: Redis,
    /// Key prefixes of sessions, of users' sets of sessions and of users'
    /// credential epochs.
    sessions: String,
    users: String,
    epochs: String,
    /// Where cached names are, read along with each session check.
    names: String,
    limits: Limits,
}

/// The BLAKE2s hash of a token, in hex: the session's name in Redis.
/// Every authenticated request makes one, so it is written into one
/// buffer (a `format!` a byte was 32 allocations a request).
pub fn digest(token: Uuid) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let hash = Blake2s256::digest(token.as_bytes());
    let mut hex = String::with_capacity(2 * hash.len());
    for byte in hash {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// A session's name in logs and in `GET /v2/sessions`: the first 16 hex
/// digits of the hash its key is named by.
pub fn public_id(token: Uuid) -> String {
    let mut id = digest(token);
    id.truncate(PUBLIC_ID_LEN);
    id
}

const PUBLIC_ID_LEN: usize = 16;

/// Unix time in milliseconds: sessions begun within the same second still
/// sort, and lifetimes end on time.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl SessionStore {
    pub fn new(redis: Redis, limits: Limits) -> Self {
        SessionStore {
            sessions: redis.key_prefix("session:"),
            users: redis.key_prefix("user-sessions:"),
            epochs: redis.key_prefix("credential-epoch:"),
            names: names::key_prefix(&redis),
            redis,
            limits,
        }
    }

    /// How long a new token lives if it is not used.
    pub fn expires_in(&self) -> Duration {
        self.limits.idle.min(self.limits.absolute)
    }

    fn key(&self, token: Uuid) -> String {
        [self.sessions.as_str(), &digest(token)].concat()
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}{user_id}", self.users)
    }

    fn epoch_key(&self, user_id: i64) -> String {
        format!("{}{user_id}", self.epochs)
    }

    /// Starts a session for `user_id` under a fresh token, with the
    /// credential `epoch` read along with the password hash it was checked
    /// against. `None` when the user's credentials changed since (the
    /// password checked is no longer theirs). Only ever creates a session,
    /// never adopts one.
    pub async fn create(
        &self,
        user_id: i64,
        epoch: i64,
        client_ip: Option<IpAddr>,
    ) -> Result<Option<Session>, StorageError> {
        let token = Uuid::new_v4();
        let mut redis = self.redis.connection();
        let mut call = CREATE.prepare_invoke();
        call.key(self.key(token))
            .key(self.user_key(user_id))
            .key(self.epoch_key(user_id))
            .arg(user_id)
            .arg(self.expires_in().as_millis() as u64)
            .arg(digest(token))
            .arg(now_ms())
            .arg(client_ip.map(|ip| ip.to_string()).unwrap_or_default())
            .arg(self.limits.absolute.as_millis() as u64)
            .arg(epoch)
            .arg(self.limits.per_user.max(1))
            .arg(&self.sessions);
        let created: i64 = self
            .redis
            .bounded("EVALSHA", call.invoke_async(&mut redis))
            .await?;
        match created {
            1 => Ok(Some(Session {
                token,
                user_id,
                cached_name: None,
            })),
            STALE => Ok(None),
            // 122 random bits colliding means the RNG is broken: refuse.
            _ => Err(StorageError::invariant("session token collision")),
        }
    }

    /// The session for `token`, if it exists, has not expired and is of
    /// the user's current credential epoch; using it restarts its idle count
    /// (never past its absolute lifetime).
    pub async fn find(&self, token: Uuid) -> Result<Option<Session>, StorageError> {
        let mut redis = self.redis.connection();
        let mut call = TOUCH.prepare_invoke();
        call.key(self.key(token))
            .arg(now_ms())
            .arg(self.limits.idle.as_millis() as u64)
            .arg(self.limits.absolute.as_millis() as u64)
            .arg(&self.names)
            .arg(&self.epochs);
        let found: Option<(i64, Option<String>)> = self
            .redis
            .bounded("EVALSHA", call.invoke_async(&mut redis))
            .await?;
        Ok(found.map(|(user_id, cached_name)| Session {
            token,
            user_id,
            cached_name,
        }))
    }

    /// The user's live sessions, oldest first, in one round trip.
    pub async fn list(&self, user_id: i64) -> Result<Vec<SessionInfo>, StorageError> {
        let mut redis = self.redis.connection();
        let mut call = LIST.prepare_invoke();
        call.key(self.user_key(user_id))
            .key(self.epoch_key(user_id))
            .arg(&self.sessions)
            .arg(now_ms())
            .arg(self.limits.absolute.as_millis() as u64);
        type Row = (String, u64, u64, String);
        let rows: Vec<Row> = self
            .redis
            .bounded("EVALSHA", call.invoke_async(&mut redis))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(mut id, created, last_seen, ip)| {
                id.truncate(PUBLIC_ID_LEN);
                SessionInfo {
                    id,
                    created,
                    last_seen,
                    client_ip: Some(ip).filter(|ip| !ip.is_empty()),
                }
            })
            .collect())
    }

    /// Ends the session at once.
    pub async fn revoke(&self, token: Uuid) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        let mut call = REVOKE.prepare_invoke();
        call.key(self.key(token))
            .arg(&self.users)
            .arg(digest(token));
        let _removed: i64 = self
            .redis
            .bounded("EVALSHA", call.invoke_async(&mut redis))
            .await?;
        Ok(())
    }

    /// Ends every session of `user_id` at once, now that their credential
    /// epoch is `epoch` (as just committed in PostgreSQL): sessions still on
    /// their way from a login under an older one are refused when they come.
    /// Returns how many sessions ended.
    ///
    /// Called after the commit. Should Redis fail here, the caller answers
    /// 503 and the change stands: the user's next login carries the new
    /// epoch to Redis, which ends the older sessions then.
    pub async fn end_all(&self, user_id: i64, epoch: i64) -> Result<u64, StorageError> {
        let mut redis = self.redis.connection();
        let mut call = END_ALL.prepare_invoke();
        call.key(self.user_key(user_id))
            .key(self.epoch_key(user_id))
            .arg(&self.sessions)
            .arg(epoch)
            .arg(self.limits.absolute.as_millis() as u64);
        self.redis
            .bounded("EVALSHA", call.invoke_async(&mut redis))
            .await
    }
}

/// What [`CREATE`] answers when the login's credential epoch is older than
/// the user's latest.
const STALE: i64 = -1;

/// KEYS: the session, the user's sessions, the user's epoch. ARGV: user id,
/// first TTL, the session's hash, now, client address, absolute lifetime
/// (times in milliseconds), the login's credential epoch, sessions per user,
/// the prefix of session keys.
///
/// The user's epoch is raised to the login's, if higher: a change whose
/// epoch never reached Redis (it failed after the commit) takes effect at
/// the next login. It and the user's set live as long as the newest session
/// can, so every session of an older epoch meets them.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local epoch = tonumber(ARGV[7])
        local current = tonumber(redis.call('GET', KEYS[3]) or '0')
        if epoch < current then
            return -1
        end
        if redis.call('EXISTS', KEYS[1]) == 1 then
            return 0
        end
        local now = tonumber(ARGV[4])
        local lifetime = tonumber(ARGV[6])
        redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'created', ARGV[4],
            'seen', ARGV[4], 'ip', ARGV[5], 'epoch', ARGV[7])
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        if epoch > 0 then
            redis.call('SET', KEYS[3], epoch, 'PX', lifetime)
        end
        -- Forget the sessions that ended by themselves: past their lifetime,
        -- or idle (their key is gone). The set is never larger than the cap,
        -- so this loop is bounded.
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - lifetime)
        for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
            if redis.call('EXISTS', ARGV[9] .. member) == 0 then
                redis.call('ZREM', KEYS[2], member)
            end
        end
        -- Room for this one first, so that it is never the one ended
        -- (another replica's clock may be ahead of this one's).
        local over = redis.call('ZCARD', KEYS[2]) - (tonumber(ARGV[8]) - 1)
        if over > 0 then
            local oldest = redis.call('ZPOPMIN', KEYS[2], over)
            for i = 1, #oldest, 2 do
                redis.call('DEL', ARGV[9] .. oldest[i])
            end
        end
        redis.call('ZADD', KEYS[2], now, ARGV[3])
        redis.call('PEXPIRE', KEYS[2], lifetime)
        return 1
        ",
    )
});

/// KEYS: the session. ARGV: now, idle timeout, absolute lifetime (all in
/// milliseconds), the prefix of cached names, the prefix of users' epochs.
/// Returns the user id and their cached name (or nil), or nil when the
/// session is gone, past its lifetime or of an older credential epoch.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local found = redis.call('HMGET', KEYS[1], 'user_id', 'created', 'epoch')
        if not found[1] then
            return false
        end
        local left = tonumber(found[2]) + tonumber(ARGV[3]) - tonumber(ARGV[1])
        local current = tonumber(redis.call('GET', ARGV[5] .. found[1]) or '0')
        if left <= 0 or tonumber(found[3] or '0') < current then
            redis.call('DEL', KEYS[1])
            return false
        end
        redis.call('HSET', KEYS[1], 'seen', ARGV[1])
        redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), left))
        return {found[1], redis.call('HGET', ARGV[4] .. found[1], 'name')}
        ",
    )
});

/// KEYS: the user's sessions, the user's epoch. ARGV: the prefix of
/// session keys, now, absolute lifetime. Returns each live session, oldest
/// first, as its hash, created, last seen and client address; forgets the
/// members whose session has ended.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local current = tonumber(redis.call('GET', KEYS[2]) or '0')
        local oldest = tonumber(ARGV[2]) - tonumber(ARGV[3])
        local live = {}
        for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
            local found = redis.call('HMGET', ARGV[1] .. member, 'created', 'seen', 'ip', 'epoch')
            if found[1] and tonumber(found[1]) > oldest
                and tonumber(found[4] or '0') >= current then
                table.insert(live, {member, tonumber(found[1]), tonumber(found[2]), found[3] or ''})
            else
                redis.call('ZREM', KEYS[1], member)
            end
        end
        return live
        ",
    )
});

/// KEYS: the session. ARGV: the prefix of users' sets, the session's hash.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local user_id = redis.call('HGET', KEYS[1], 'user_id')
        if not user_id then
            return 0
        end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', ARGV[1] .. user_id, ARGV[2])
        return 1
        ",
    )
});

/// KEYS: the user's sessions, the user's epoch. ARGV: the prefix of session
/// keys, the user's new epoch, absolute lifetime (ms).
static END_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ended = 0
        for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
            ended = ended + redis.call('DEL', ARGV[1] .. member)
        end
        redis.call('DEL', KEYS[1])
        local epoch = tonumber(ARGV[2])
        if epoch > tonumber(redis.call('GET', KEYS[2]) or '0') then
            redis.call('SET', KEYS[2], epoch, 'PX', ARGV[3])
        end
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
        assert!(digest(token).starts_with(&id));
        assert!(!digest(token).contains(&token.simple().to_string()));
    }

    /// The digest names every live session's key in Redis: if its spelling
    /// changed, an upgrade would sign everyone out. BLAKE2s-256 of the
    /// token's 16 bytes, in lowercase hex (Python's `hashlib.blake2s`
    /// gives the same).
    #[test]
    fn a_tokens_digest_is_its_blake2s_hash_in_lowercase_hex() {
        let token = Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        assert_eq!(
            digest(token),
            "f5a2b90a8495a658bdb15b93e78d0fbc11ca5c470f461f0994a004f88938f003"
        );
    }
}
