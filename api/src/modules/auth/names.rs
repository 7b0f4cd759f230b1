//! Users' names, cached in Redis: `/getName` reads through the cache,
//! `/setName` updates it.
//!
//! Once `/setName` has answered, no one may read the name it replaced, with
//! any number of readers and writers at once and entries evicted at any
//! moment. Two rules see to it:
//!
//! - Every name carries its version (`users.name_version`, bumped in the row
//!   lock, so in commit order), and a cached name is only ever replaced by a
//!   newer one. A writer updates an entry it finds; it creates none.
//! - Only a reader that missed fills an entry, with what it then reads from
//!   PostgreSQL, and only under a lease it took before reading: every writer
//!   revokes the lease, so a fill that may have read an older name is
//!   dropped. (Memcache's leases, as Facebook described them.)
//!
//! So an entry is either absent or at least as new as every change that has
//! answered: a read that begins after a change answered never gets an older
//! name. (While a change is under way, before it answers, a read may give
//! the name before it or the one after.)

use std::sync::LazyLock;

use redis::Script;
use uuid::Uuid;

use crate::storage::redis::Redis;
use crate::storage::StorageError;

/// How long an unread name stays cached.
const TTL_SECONDS: u64 = 600;
/// How long a reader may take between taking a lease and filling the entry;
/// a fill after that is dropped.
const LEASE_MILLISECONDS: u64 = 5_000;

/// The entries' keys, before the user id: session checks read them too
/// (`Session::cached_name`).
pub fn key_prefix(redis: &Redis) -> String {
    redis.key_prefix("name:")
}

#[derive(Clone)]
pub struct NameCache {
    redis: Redis,
    /// Key prefixes of the entries and of their leases.
    entries: String,
    leases: String,
}

/// A reader's right to fill one user's entry, until a writer revokes it.
pub struct Lease {
    user_id: i64,
    token: String,
}

impl NameCache {
    pub fn new(redis: Redis) -> Self {
        NameCache {
            entries: key_prefix(&redis),
            leases: redis.key_prefix("name-lease:"),
            redis,
        }
    }

    fn key(&self, user_id: i64) -> String {
        [self.entries.as_str(), &user_id.to_string()].concat()
    }

    fn lease_key(&self, user_id: i64) -> String {
        [self.leases.as_str(), &user_id.to_string()].concat()
    }

    /// The cached name, if any. (`/getName` has it from the session check,
    /// read in the same script; this reads it alone.)
    pub async fn get(&self, user_id: i64) -> Result<Option<String>, StorageError> {
        let mut redis = self.redis.connection();
        let mut command = redis::cmd("HGET");
        command.arg(self.key(user_id)).arg("name");
        self.redis
            .bounded("HGET", command.query_async(&mut redis))
            .await
    }

    /// After a miss, before reading PostgreSQL: the lease to fill the entry
    /// with what will be read, or `None` when another reader holds it (this
    /// one then only reads).
    pub async fn lease(&self, user_id: i64) -> Result<Option<Lease>, StorageError> {
        let token = Uuid::new_v4().simple().to_string();
        let mut redis = self.redis.connection();
        let mut command = redis::cmd("SET");
        command
            .arg(self.lease_key(user_id))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_MILLISECONDS);
        let taken: Option<String> = self
            .redis
            .bounded("SET", command.query_async(&mut redis))
            .await?;
        Ok(taken.map(|_| Lease { user_id, token }))
    }

    /// Caches what a reader read under `lease`, unless a writer revoked it.
    pub async fn fill(&self, lease: Lease, name: &str, version: i64) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        let mut call = FILL.prepare_invoke();
        call.key(self.key(lease.user_id))
            .key(self.lease_key(lease.user_id))
            .arg(lease.token)
            .arg(name)
            .arg(version)
            .arg(TTL_SECONDS);
        self.redis
            .bounded("EVALSHA", call.invoke_async::<()>(&mut redis))
            .await
    }

    /// After a change has committed: updates the entry if there is one and
    /// revokes any reader's lease.
    pub async fn changed(
        &self,
        user_id: i64,
        name: &str,
        version: i64,
    ) -> Result<(), StorageError> {
        let mut redis = self.redis.connection();
        let mut call = CHANGED.prepare_invoke();
        call.key(self.key(user_id))
            .key(self.lease_key(user_id))
            .arg(name)
            .arg(version);
        self.redis
            .bounded("EVALSHA", call.invoke_async::<()>(&mut redis))
            .await
    }
}

/// KEYS: the entry, the lease. ARGV: lease token, name, version, TTL.
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[2]) ~= ARGV[1] then
            return 0
        end
        redis.call('DEL', KEYS[2])
        local cached = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
        if cached < tonumber(ARGV[3]) then
            redis.call('HSET', KEYS[1], 'name', ARGV[2], 'version', ARGV[3])
        end
        redis.call('EXPIRE', KEYS[1], ARGV[4])
        return 1
        ",
    )
});

/// KEYS: the entry, the lease. ARGV: name, version.
static CHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('DEL', KEYS[2])
        local cached = redis.call('HGET', KEYS[1], 'version')
        if cached and tonumber(cached) < tonumber(ARGV[2]) then
            redis.call('HSET', KEYS[1], 'name', ARGV[1], 'version', ARGV[2])
        end
        return 1
        ",
    )
});
