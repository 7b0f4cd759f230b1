//! Stopping PostgreSQL or Redis under a running service: prompt 503s, never a
//! hang and never a pass; and recovery without a restart once they return.

use std::time::{Duration, Instant};

use crate::helpers::{assert_problem, eventually, spawn_app_with, DedicatedServices, TestApp};

/// Generous next to the 500 ms / 1 s timeouts the test app runs with.
const PROMPT: Duration = Duration::from_secs(4);

async fn timed_get(app: &TestApp, path: &str, token: &str) -> (reqwest::Response, Duration) {
    let start = Instant::now();
    let response = app.get_with_token(path, token).await;
    (response, start.elapsed())
}

async fn recovers(app: &TestApp, token: &str) -> bool {
    eventually(Duration::from_secs(15), || async {
        app.get("/readyz").await.status() == 200 && app.get_name(token).await.status() == 200
    })
    .await
}

#[tokio::test]
async fn redis_outage_is_a_prompt_503_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    let (_, token) = app.signed_in_user("alice").await;

    services.stop_redis();

    let (response, took) = timed_get(&app, "/getName", &token).await;
    assert!(took < PROMPT, "getName took {took:?}");
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    let (ready, took) = timed_get(&app, "/readyz", &token).await;
    assert!(took < PROMPT, "readyz took {took:?}");
    assert_problem(ready, 503).await;
    let login = app.post_login("alice", crate::helpers::PASSWORD).await;
    assert_problem(login, 503).await;

    services.start_redis();

    assert!(
        recovers(&app, &token).await,
        "no recovery after Redis returned"
    );
}

#[tokio::test]
async fn postgres_outage_is_a_prompt_503_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    let (_, token) = app.signed_in_user("alice").await;

    services.stop_postgres();

    let (response, took) = timed_get(&app, "/getName", &token).await;
    assert!(took < PROMPT, "getName took {took:?}");
    assert_problem(response, 503).await;
    let (ready, took) = timed_get(&app, "/readyz", &token).await;
    assert!(took < PROMPT, "readyz took {took:?}");
    assert_problem(ready, 503).await;
    // Endpoints that need only Redis keep working.
    assert_eq!(app.get("/v1/hello").await.status(), 200);

    services.start_postgres();

    assert!(
        recovers(&app, &token).await,
        "no recovery after PostgreSQL returned"
    );
}
