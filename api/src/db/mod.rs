//! PostgreSQL: the pool every request borrows from, and the schema in `init.sql`.

pub mod users;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};

use crate::config::DatabaseSettings;
use crate::error::ApiError;

/// The schema, hand-written and idempotent; compiled into the binary so
/// `db init` needs nothing beside it.
pub const INIT_SQL: &str = include_str!("../../../init.sql");

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("DATABASE_URL is invalid: {0}")]
    Url(#[from] tokio_postgres::Error),
    #[error("could not build the database pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// Builds the pool. No connection is made until the first request, so the
/// service starts (and reports not-ready) while PostgreSQL is still down.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, DbSetupError> {
    let mut pg = tokio_postgres::Config::from_str(&settings.url)?;
    // Without this a connect to a black-holed host waits for the kernel's
    // TCP timeout, minutes, instead of answering 503.
    pg.connect_timeout(settings.timeout());
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            // Fast recycling skips a round trip per checkout and still drops
            // connections whose socket the server closed (after a restart).
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(settings.timeout());
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        })
        .build()?;
    Ok(pool)
}

/// Applies `init.sql`. Safe to run on every start and any number of times.
pub async fn init(pool: &Pool) -> Result<(), ApiError> {
    let client = pool.get().await?;
    client.batch_execute(INIT_SQL).await?;
    Ok(())
}

/// Answers whether PostgreSQL serves queries right now.
pub async fn ping(pool: &Pool) -> Result<(), ApiError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
