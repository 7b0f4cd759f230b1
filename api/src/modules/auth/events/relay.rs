//! The relay: moves events from the `outbox` table to the Redis stream.
//!
//! Every worker runs one, and a PostgreSQL advisory lock lets one at a time
//! (across workers and replicas) take a batch, so the stream keeps the order
//! the events were written in. A batch is added to the stream first and
//! deleted from the table after, in the transaction that holds its rows:
//! a failure in between leaves the rows to be sent again (at least once).

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_postgres::Pool;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::STREAM;
use crate::storage::redis::Redis;

/// Events moved per round trip.
const BATCH: i64 = 500;
/// How soon a relay looks again after moving events, or after this
/// process wrote one (time for its transaction to commit).
const SOON: Duration = Duration::from_millis(100);
/// The longest a relay goes without looking: for events no relay was told
/// of (the `users` command's, or a worker's whose relay stopped with it
/// before it looked). Each empty look doubles the wait, from [`SOON`].
const LONGEST: Duration = Duration::from_secs(5);
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

/// Bumped whenever this process adds an event to the outbox; each relay
/// watches it. One for the process rather than one a relay, so that the
/// functions that write events need no handle to pass: a relay told of
/// another app's event (tests run several in one process) looks once for
/// nothing.
static WRITTEN: LazyLock<watch::Sender<()>> = LazyLock::new(|| watch::Sender::new(()));

/// Tells the relays of this process that an event was added to the outbox
/// (its transaction may not have committed yet): they look [`SOON`].
pub(crate) fn wake() {
    WRITTEN.send_replace(());
}

/// How long a relay waits before it looks again: [`SOON`] after it moved
/// events or was woken, twice as long after each look that found none, up
/// to [`LONGEST`]. Each look is a transaction, so an idle worker costs
/// PostgreSQL one every 5 s, not ten a second.
#[derive(Debug)]
struct Pace {
    wait: Duration,
}

impl Pace {
    fn new() -> Pace {
        Pace { wait: SOON }
    }

    /// The wait after a look that moved `sent` events.
    fn after(&mut self, sent: usize) -> Duration {
        self.wait = if sent > 0 {
            SOON
        } else {
            (self.wait * 2).min(LONGEST)
        };
        self.wait
    }

    /// The wait once woken: back to [`SOON`].
    fn woken(&mut self) -> Duration {
        self.wait = SOON;
        self.wait
    }
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
        let mut written = WRITTEN.subscribe();
        let mut pace = Pace::new();
        loop {
            match self.relay_batch().await {
                Ok(sent) => {
                    if failing {
                        tracing::info!(sent, "event relay recovered");
                        failing = false;
                    }
                    if sent == BATCH as usize {
                        continue;
                    }
                    let wait = pace.after(sent);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // The sender is a static: it is never dropped.
                        _ = written.changed() => tokio::time::sleep(pace.woken()).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_relay_looks_ever_less_often_and_soon_again_once_there_is_work() {
        let mut pace = Pace::new();
        let idle: Vec<u64> = (0..8).map(|_| pace.after(0).as_millis() as u64).collect();
        assert_eq!(idle, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(pace.after(3), SOON);
        assert_eq!(pace.after(0), SOON * 2);
        pace.after(0);
        assert_eq!(pace.woken(), SOON);
        assert_eq!(pace.after(0), SOON * 2);
    }
}
