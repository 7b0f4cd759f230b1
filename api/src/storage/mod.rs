//! The storage layer: PostgreSQL and Redis, their settings and connections,
//! and one error type that tells an outage (answer 503, retry) from a
//! failure (a bug, answer 500). Nothing here knows about HTTP: the edge
//! (`error.rs`) turns a [`StorageError`] into a problem document.

pub mod migrations;
pub mod postgres;
pub mod redis;
pub mod tls;

/// Any error, kept whole so that its chain of causes reaches the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A backing service whose outage turns into a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    Redis,
}

impl Dependency {
    /// Its name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dependency::Postgres => "the database",
            Dependency::Redis => "the key-value store",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store did not answer in time, or the connection to it failed.
    #[error("{dependency} is unavailable")]
    Unavailable {
        dependency: Dependency,
        #[source]
        source: Option<BoxError>,
    },
    /// The store answered with an error, or what it holds breaks an
    /// invariant: a bug to look into, not an outage.
    #[error("storage failed")]
    Failed(#[source] BoxError),
}

impl StorageError {
    pub fn unavailable(dependency: Dependency, source: impl Into<BoxError>) -> Self {
        StorageError::Unavailable {
            dependency,
            source: Some(source.into()),
        }
    }

    /// A broken invariant, named by `what`.
    pub fn invariant(what: &'static str) -> Self {
        StorageError::Failed(what.into())
    }

    /// The PostgreSQL constraint this error violated, if it is such an
    /// error: callers map the ones they expect to client errors.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            StorageError::Failed(source) => source
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::as_db_error)
                .and_then(|db| db.constraint()),
            StorageError::Unavailable { .. } => None,
        }
    }
}
