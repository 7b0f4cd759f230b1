//! The relay: moves events from the `outbox` table to the Redis stream.
//!
//! Every worker runs one, and a PostgreSQL advisory lock lets one at a time
//! (across workers and replicas) take a batch, so the stream keeps the order
//! the events were written in. A batch is added to the stream first and
//! deleted from the table after, in the transaction that holds its rows:
//! a failure in between leaves the rows to be sent again (at least once).

use std::time::Duration;

use deadpool_postgres::Pool;
use redis::aio::ConnectionManager;

use super::STREAM;
use crate::storage::redis::Redis;

/// Events moved per round trip.
const BATCH: i64 = 500;
/// How often an idle relay looks for new events.
const IDLE: Duration = Duration::from_millis(100);
/// How long a failing relay waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);
/// The stream is trimmed to about this many entries; consumers that fall
/// further behind lose the oldest.
const MAX_LEN: usize = 1_000_000;
/// The advisory lock's key ("outbox" in ASCII).
const LOCK: i64 = 0x6f7574626f78;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer in time")]
    Timeout,
}

/// It keeps its own bounded call rather than `Redis::bounded`, which logs
/// every failure: a relay retries each second through an outage, and says
/// so only when the outage starts and ends.
pub struct Relay {
    db: Pool,
    redis: ConnectionManager,
    stream: String,
    timeout: Duration,
}

impl Relay {
    pub fn new(db: Pool, redis: &Redis) -> Relay {
        Relay {
            db,
            redis: redis.connection(),
            stream: redis.key_prefix(STREAM),
            timeout: redis.timeout(),
        }
    }

    /// Relays until dropped. An outage is logged when it starts and when it
    /// ends, not on every retry.
    pub async fn run(self) {
        let mut failing = false;
        loop {
            match self.relay_batch().await {
                Ok(sent) => {
                    if failing {
                        tracing::info!(sent, "event relay recovered");
                        failing = false;
                    }
                    if sent < BATCH as usize {
                        tokio::time::sleep(IDLE).await;
                    }
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "event relay failing; events wait in the outbox");
                        failing = true;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Moves one batch; returns how many events it moved.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let mut client = self.db.get().await?;
        let transaction = client.transaction().await?;
        let lock = transaction
            .prepare_cached("SELECT pg_try_advisory_xact_lock($1)")
            .await?;
        let locked: bool = transaction.query_one(&lock, &[&LOCK]).await?.get(0);
        if !locked {
            return Ok(0);
        }
        let select = transaction
            .prepare_cached(
                "SELECT id, event_id::text, type, user_id, data::text, \
                 to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 traceparent FROM outbox ORDER BY id LIMIT $1",
            )
            .await?;
        let rows = transaction.query(&select, &[&BATCH]).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.get::<_, i64>(0));
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(MAX_LEN)
                .arg("*")
                .arg("event_id")
                .arg(row.get::<_, &str>(1))
                .arg("type")
                .arg(row.get::<_, &str>(2))
                .arg("user_id")
                .arg(row.get::<_, i64>(3))
                .arg("data")
                .arg(row.get::<_, &str>(4))
                .arg("occurred_at")
                .arg(row.get::<_, &str>(5));
            // The causing request's trace, for the consumer to continue.
            if let Some(traceparent) = row.get::<_, Option<&str>>(6) {
                pipe.arg("traceparent").arg(traceparent);
            }
            pipe.ignore();
        }
        let mut redis = self.redis.clone();
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut redis))
            .await
            .map_err(|_| RelayError::Timeout)??;
        let delete = transaction
            .prepare_cached("DELETE FROM outbox WHERE id = ANY($1)")
            .await?;
        transaction.execute(&delete, &[&ids]).await?;
        transaction.commit().await?;
        Ok(rows.len())
    }
}
