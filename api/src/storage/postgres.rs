//! PostgreSQL: the pool every request borrows from. The schema reaches a
//! database through the migrations (`migrations.rs`).

use std::time::Duration;

use clap::Args;
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, QueueMode, RecyclingMethod, Runtime, Timeouts,
};

use tokio_postgres::error::SqlState;

use super::tls::{self, DatabaseUrlError};
use super::{Dependency, StorageError};
use crate::metrics::{Kind, Snapshot, Value};
use crate::telemetry;

/// PostgreSQL connection and pool.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL, e.g. postgres://api:secret@127.0.0.1:5432/api
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "DATABASE_URL"
    )]
    pub url: String,
    /// Connections kept by this process's pool.
    #[arg(
        long = "database-pool-size",
        env = "DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    pub pool_size: usize,
    /// How long to wait for a pooled connection, a new connection or a
    /// connection check before answering 503; also the longest any one
    /// statement may run (PostgreSQL's statement_timeout).
    #[arg(
        id = "database_timeout_ms",
        long = "database-timeout-ms",
        env = "DATABASE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub timeout_ms: u64,
    /// How long a pooled connection may go unused (counted from when it
    /// was last handed out) before it is closed; 0 keeps them for good.
    #[arg(
        id = "database_idle_timeout_ms",
        long = "database-idle-timeout-ms",
        env = "DATABASE_IDLE_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub idle_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `None` when idle connections are kept for good.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error(transparent)]
    Url(#[from] DatabaseUrlError),
    #[error("could not build the database pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// Builds the pool. No connection is made until the first request, so the
/// service starts (and reports not-ready) while PostgreSQL is still down.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, DbSetupError> {
    // With the TLS that DATABASE_URL's sslmode and sslrootcert ask for
    // (storage/tls.rs): every connection of the pool's is made with it.
    let (mut pg, tls) = tls::database_config(&settings.url)?;
    // Without this a connect to a black-holed host waits for the kernel's
    // TCP timeout, minutes, instead of answering 503.
    pg.connect_timeout(settings.timeout());
    // A statement that runs (or waits for a lock) longer is cancelled by
    // the server itself. Migrations connect on their own, without it.
    // First, so that an operator's own options in DATABASE_URL win.
    let statement_timeout = format!("-c statement_timeout={}", settings.timeout_ms);
    let options = match pg.get_options() {
        Some(given) => format!("{statement_timeout} {given}"),
        None => statement_timeout,
    };
    pg.options(options);
    // A peer that vanished (a host gone, a cable pulled) is noticed by the
    // kernel within seconds, not after its default two hours; writes left
    // unacknowledged for 30 s (longer than a burst of packet loss) end the
    // connection. A server that is there but frozen acknowledges and never
    // answers: REQUEST_TIMEOUT_MS bounds that.
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            // Fast recycling skips a round trip per checkout and still drops
            // connections whose socket the server closed (after a restart).
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(settings.timeout());
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size)
        // The connection returned last is handed out first, so that after a
        // burst a trickle of requests (and the modules' background work)
        // reuses a few and the rest go unused long enough for
        // `close_idle_connections` to close them. First in, first out, the
        // default, would cycle through every connection and keep all warm.
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        })
        .build()?;
    Ok(pool)
}

/// Closes the pool's connections unused for `idle`, looking every quarter
/// of it (at most every 30 s), for as long as it runs. Without it a burst's
/// connections stay open for good: each holds a PostgreSQL backend process
/// (megabytes of the server's memory, a slot of its `max_connections`) and
/// the worker's buffers for it. asyncpg, which the Python stacks use, closes
/// them after 300 s by default, the default here too; the first request
/// after a quiet spell pays for a new connection. deadpool has the means
/// (`retain`) but no timer of its own.
pub(crate) async fn close_idle_connections(pool: Pool, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Only the connections waiting in the pool are looked at; the
        // closed ones close as they drop, outside the pool's lock.
        let closed = pool
            .retain(|_, metrics| metrics.last_used() < idle)
            .removed
            .len();
        if closed > 0 {
            tracing::debug!(closed, "closed idle PostgreSQL connections");
        }
    }
}

/// The trace span of one statement: its kind (`SELECT`) and table, never
/// its text's values (`telemetry::dependency_span`). Instrument the call:
/// `client.query_opt(..).instrument(postgres::span("SELECT", "users"))`.
pub fn span(operation: &'static str, table: impl Into<Option<&'static str>>) -> tracing::Span {
    telemetry::dependency_span("postgresql", operation, table.into())
}

/// Answers whether PostgreSQL serves queries right now, within the pool's
/// timeout however it fails: a frozen server takes the query and never
/// answers.
pub async fn ping(pool: &Pool) -> Result<(), StorageError> {
    let timeout = pool.timeouts().wait.unwrap_or(Duration::from_secs(2));
    let answered = tokio::time::timeout(timeout, async {
        let client = pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    })
    .await;
    answered.unwrap_or_else(|elapsed| {
        tracing::warn!("PostgreSQL did not answer a ping in time");
        Err(StorageError::unavailable(Dependency::Postgres, elapsed))
    })
}

/// The pool's levels, as gauges: summed over workers they are the service's
/// PostgreSQL connections, which must stay under WORKERS x DATABASE_POOL_SIZE.
pub fn pool_gauges(pool: &Pool, snapshot: &mut Snapshot) {
    let status = pool.status();
    let in_use = status.size.saturating_sub(status.available);
    let mut gauge = |name: &str, help: &str, labels: &[(&str, &str)], value: usize| {
        snapshot.add(name, help, Kind::Gauge, labels, Value::Number(value as f64));
    };
    let held = "PostgreSQL connections held by the pool, by state.";
    gauge("db_pool_connections", held, &[("state", "in_use")], in_use);
    let idle = status.available;
    gauge("db_pool_connections", held, &[("state", "idle")], idle);
    gauge(
        "db_pool_max_connections",
        "The most connections the pool may open (DATABASE_POOL_SIZE).",
        &[],
        status.max_size,
    );
    gauge(
        "db_pool_waiting",
        "Requests waiting for a connection from the pool.",
        &[],
        status.waiting,
    );
}

impl From<PoolError> for StorageError {
    fn from(err: PoolError) -> Self {
        match err {
            // Timeouts and failed connects are the database being away.
            PoolError::Timeout(_) | PoolError::Backend(_) | PoolError::PostCreateHook(_) => {
                tracing::warn!(error = %err, "database pool could not hand out a connection");
                StorageError::unavailable(Dependency::Postgres, err)
            }
            PoolError::Closed | PoolError::NoRuntimeSpecified => StorageError::Failed(err.into()),
        }
    }
}

/// SQLSTATEs that say the server is busy or going away, not that the
/// statement was wrong: a 503, not a bug.
const OUTAGE_STATES: [SqlState; 6] = [
    // statement_timeout: the statement ran (or waited for a lock) too long.
    SqlState::QUERY_CANCELED,
    SqlState::LOCK_NOT_AVAILABLE,
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    SqlState::TOO_MANY_CONNECTIONS,
];

impl From<tokio_postgres::Error> for StorageError {
    fn from(err: tokio_postgres::Error) -> Self {
        // A server-side error (SQLSTATE) is ours to explain, unless it says
        // the server is busy or going away; anything else is the connection
        // going away under us. Those are outages, not bugs.
        let outage = match err.code() {
            Some(code) => OUTAGE_STATES.contains(code),
            None => err.as_db_error().is_none(),
        };
        if outage {
            tracing::warn!(error = %err, "database failed mid-request");
            StorageError::unavailable(Dependency::Postgres, err)
        } else {
            StorageError::Failed(err.into())
        }
    }
}
