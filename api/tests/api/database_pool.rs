//! The service's PostgreSQL connections: a burst's are closed once they go
//! unused (DATABASE_IDLE_TIMEOUT_MS), and the next request opens what it
//! needs. Counted from PostgreSQL's side, where a connection left open
//! costs a backend process.

use std::time::Duration;

use crate::helpers::{eventually, postgres_admin, spawn_app_with, Servers};

/// The server processes serving the database at `database_url`.
async fn backends(servers: &Servers, database_url: &str) -> i64 {
    let database = database_url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("a database name in the URL");
    postgres_admin(servers)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND backend_type = 'client backend'",
            &[&database],
        )
        .await
        .expect("pg_stat_activity answers")
        .get(0)
}

#[tokio::test]
async fn a_bursts_connections_are_closed_once_idle_and_the_next_request_opens_one() {
    let servers = Servers::shared();
    let app = spawn_app_with(&servers, &["--database-idle-timeout-ms=500"]).await;
    let database_url = &app.settings.database.url;
    let burst = async || {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(app.db.get().await.expect("the pool hands out a connection"));
        }
        held
    };
    // A burst: four connections in use at once, then back in the pool
    // (counted while held: a slow count must not race the timeout).
    let held = burst().await;
    assert!(backends(&servers, database_url).await >= 4);
    drop(held);
    // Then a trickle, a connection every 100 ms: handed the one returned
    // last each time, it leaves the others to age. A module's background
    // work may keep one more in use.
    let closed = eventually(Duration::from_secs(10), || async {
        drop(app.db.get().await.expect("the pool hands out a connection"));
        backends(&servers, database_url).await <= 2 && app.db.status().size <= 2
    })
    .await;
    assert!(closed, "the burst's idle connections were not closed");
    // What was closed is opened again when needed.
    let held = burst().await;
    assert!(backends(&servers, database_url).await >= 4);
    drop(held);
    assert_eq!(app.get("/readyz").await.status(), 200);
}
