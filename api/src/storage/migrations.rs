//! Versioned schema migrations, embedded in the binary by refinery and
//! applied in order, each once per database and each in its own
//! transaction. Every set of migrations (the core's in `api/migrations`,
//! each module's in its `migrations/`) keeps its own history table, with the
//! version, name, time and checksum of what was applied: a migration edited
//! after it was applied is refused by name.
//!
//! refinery takes no lock, so [`migrate`] holds a PostgreSQL advisory lock
//! on a connection of its own for the whole run: when several workers or
//! replicas start at once, one applies and the others wait, then find
//! nothing left to do. The lock goes with the connection, whatever happens.

use std::time::Duration;

use refinery::{Migration, Runner};

use super::postgres::DatabaseSettings;
use super::tls::{self, DatabaseUrlError};

/// The advisory lock's key ("migrate" in ASCII).
pub const LOCK: i64 = 0x006d_6967_7261_7465;

/// How long a migration's statement may wait for a table's lock.
pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// One set of migrations and the table that records it.
pub struct Migrations {
    /// The history table, unique to the set.
    pub history: &'static str,
    /// Where the files are, from the repository's root (`make migration`
    /// adds the next one there).
    pub dir: &'static str,
    pub runner: Runner,
}

impl Migrations {
    pub fn new(history: &'static str, dir: &'static str, mut runner: Runner) -> Self {
        runner.set_migration_table_name(history);
        Migrations {
            history,
            dir,
            runner,
        }
    }
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The core's own migrations.
pub fn core() -> Migrations {
    Migrations::new(
        "schema_history",
        "api/migrations",
        embedded::migrations::runner(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Url(#[from] DatabaseUrlError),
    #[error("cannot connect to PostgreSQL to migrate")]
    Connect(#[source] tokio_postgres::Error),
    #[error("PostgreSQL did not answer in time")]
    Timeout,
    #[error("another process held the migration lock for longer than {0:?}")]
    Locked(Duration),
    #[error("PostgreSQL failed during migration")]
    Postgres(#[source] tokio_postgres::Error),
    /// refinery names the migration (`V2__outbox`) in its message.
    #[error("migrating {history}")]
    Migration {
        history: &'static str,
        #[source]
        source: refinery::Error,
    },
}

/// What one set has applied and has yet to apply.
pub struct Status {
    pub history: &'static str,
    /// `V1__init applied 2026-11-28T…`, oldest first.
    pub applied: Vec<String>,
    pub pending: Vec<String>,
}

/// Applies every pending migration of every set, in order, under the lock;
/// returns what it applied. Waits at most `lock_wait` for another process's
/// run to finish.
pub async fn migrate(
    database: &DatabaseSettings,
    sets: Vec<Migrations>,
    lock_wait: Duration,
) -> Result<Vec<String>, MigrateError> {
    let mut client = connect(database).await?;
    lock(&client, lock_wait).await?;
    let mut applied = Vec::new();
    for set in sets {
        let report =
            set.runner
                .run_async(&mut client)
                .await
                .map_err(|source| MigrateError::Migration {
                    history: set.history,
                    source,
                })?;
        applied.extend(
            report
                .applied_migrations()
                .iter()
                .map(|migration| format!("{}: {migration}", set.history)),
        );
    }
    // Dropping the connection releases the lock.
    Ok(applied)
}

/// Each set's applied and pending migrations.
pub async fn status(
    database: &DatabaseSettings,
    sets: Vec<Migrations>,
) -> Result<Vec<Status>, MigrateError> {
    let mut client = connect(database).await?;
    let mut statuses = Vec::new();
    for set in sets {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&set.history])
            .await
            .map_err(MigrateError::Postgres)?
            .get(0);
        let applied: Vec<Migration> = if exists {
            set.runner
                .get_applied_migrations_async(&mut client)
                .await
                .map_err(|source| MigrateError::Migration {
                    history: set.history,
                    source,
                })?
        } else {
            Vec::new()
        };
        let pending = set
            .runner
            .get_migrations()
            .iter()
            .filter(|local| !applied.iter().any(|done| done.version() == local.version()))
            .map(ToString::to_string)
            .collect();
        let applied = applied
            .iter()
            .map(|migration| match migration.applied_on() {
                Some(on) => format!("{migration} applied {on}"),
                None => migration.to_string(),
            })
            .collect();
        statuses.push(Status {
            history: set.history,
            applied,
            pending,
        });
    }
    Ok(statuses)
}

/// A connection of its own, outside the pool: the advisory lock is held by
/// the connection, and must not go back into the pool with it.
async fn connect(database: &DatabaseSettings) -> Result<tokio_postgres::Client, MigrateError> {
    // The pool's TLS, so that migrations never go in plain text where
    // requests would not.
    let (mut config, tls) = tls::database_config(&database.url)?;
    config.connect_timeout(database.timeout());
    // A connection that dies silently mid-migration is noticed, not waited
    // on for ever.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    let (client, connection) = tokio::time::timeout(database.timeout(), config.connect(tls))
        .await
        .map_err(|_| MigrateError::Timeout)?
        .map_err(MigrateError::Connect)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "migration connection failed");
        }
    });
    Ok(client)
}

/// Takes the lock, waiting at most `wait` for another process's run to
/// finish (however long its migrations take, up to that). Then bounds each
/// statement's wait for a table lock by [`DDL_LOCK_TIMEOUT`]: a DDL
/// statement queued behind a long query of a running replica fails, and the
/// start with it, instead of stalling every query on that table meanwhile.
async fn lock(client: &tokio_postgres::Client, wait: Duration) -> Result<(), MigrateError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])
            .await
            .map_err(MigrateError::Postgres)?
            .get(0);
        if locked {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MigrateError::Locked(wait));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let millis = DDL_LOCK_TIMEOUT.as_millis();
    client
        .batch_execute(&format!("SET lock_timeout = {millis}"))
        .await
        .map_err(MigrateError::Postgres)
}
