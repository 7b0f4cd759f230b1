//! Stopping PostgreSQL or Redis under a running service: readiness is a
//! prompt 503, never a hang, what needs neither keeps answering, and all
//! recovers without a restart once they return.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Response;

use crate::helpers::{assert_problem, eventually, spawn_app_with, DedicatedServices, TestApp};

/// Generous next to the 500 ms / 1 s timeouts the test app runs with.
const PROMPT: Duration = Duration::from_secs(4);

/// The response, asserting it came back promptly (and never waiting
/// longer for it).
pub async fn promptly(what: &str, request: impl Future<Output = Response>) -> Response {
    let start = Instant::now();
    let response = tokio::time::timeout(PROMPT, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PROMPT:?}"));
    let took = start.elapsed();
    assert!(took < PROMPT, "{what} took {took:?}");
    response
}

async fn recovers(app: &TestApp) -> bool {
    eventually(Duration::from_secs(15), || async {
        app.get("/readyz").await.status() == 200
    })
    .await
}

/// A 503 problem naming Redis, with `Retry-After`.
async fn assert_redis_unavailable(response: Response) {
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = assert_problem(response, 503).await;
    assert_eq!(
        problem["detail"], "the key-value store is unavailable, try again shortly",
        "{problem}"
    );
}

#[tokio::test]
async fn redis_outage_is_a_prompt_503_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;

    services.stop_redis();

    assert_redis_unavailable(promptly("readyz", app.get("/readyz")).await).await;
    // The request budget is a brake, not a lock: endpoints that need no
    // Redis keep working.
    let hello = promptly("hello", app.get("/v1/hello")).await;
    assert_eq!(hello.status(), 200);

    services.start_redis();

    assert!(recovers(&app).await, "no recovery after Redis returned");
}

#[tokio::test]
async fn a_frozen_redis_is_a_prompt_503_never_a_hang_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;

    services.pause_redis();

    for _ in 0..3 {
        assert_redis_unavailable(promptly("readyz", app.get("/readyz")).await).await;
    }
    let hello = promptly("hello", app.get("/v1/hello")).await;
    assert_eq!(hello.status(), 200);

    services.resume_redis();

    assert!(recovers(&app).await, "no recovery after Redis woke up");
}

#[tokio::test]
async fn postgres_outage_is_a_prompt_503_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;

    services.stop_postgres();

    let ready = promptly("readyz", app.get("/readyz")).await;
    assert_eq!(ready.headers()["retry-after"], "1");
    assert_problem(ready, 503).await;
    // Endpoints that need no database keep working.
    assert_eq!(app.get("/v1/hello").await.status(), 200);

    services.start_postgres();

    assert!(
        recovers(&app).await,
        "no recovery after PostgreSQL returned"
    );
}

/// A frozen PostgreSQL (SIGSTOP: connections open, queries taken, nothing
/// answered) is not a hang: readiness answers 503 within the database
/// timeout, again and again, and all recovers once it wakes.
#[tokio::test]
async fn a_frozen_postgres_is_a_prompt_503_never_a_hang_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    services.freeze_postgres();

    for _ in 0..3 {
        let ready = promptly("readyz", app.get("/readyz")).await;
        assert_eq!(ready.headers()["retry-after"], "1");
        assert_problem(ready, 503).await;
    }
    assert_eq!(app.get("/v1/hello").await.status(), 200);

    services.thaw_postgres();

    assert!(recovers(&app).await, "no recovery after PostgreSQL woke up");
}

/// Once Redis failed, the service stops asking it for a while: a frozen
/// Redis costs one request its timeout, not every request (each makes a
/// Redis call for its budget). Twenty requests take far less than twenty
/// timeouts, and all are answered.
#[tokio::test]
async fn a_frozen_redis_is_not_asked_again_at_every_request() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    let timeout = Duration::from_millis(app.settings.redis.timeout_ms);

    services.pause_redis();

    let start = Instant::now();
    for _ in 0..20 {
        let hello = promptly("hello", app.get("/v1/hello")).await;
        assert_eq!(hello.status(), 200);
    }
    let took = start.elapsed();

    services.resume_redis();
    assert!(took < timeout * 10, "20 requests took {took:?}");
    assert!(recovers(&app).await, "no recovery after Redis woke up");
}

/// A statement that runs longer than DATABASE_TIMEOUT_MS is cancelled by
/// PostgreSQL itself (statement_timeout), and that is an outage to answer
/// 503 for, not a bug to answer 500 for.
#[tokio::test]
async fn a_statement_past_the_database_timeout_is_cancelled_as_an_outage() {
    let app = spawn_app_with(&crate::helpers::Servers::shared(), &[]).await;
    let client = app.db.get().await.unwrap();
    let started = Instant::now();

    let failed = client.query("SELECT pg_sleep(10)", &[]).await.unwrap_err();

    assert!(started.elapsed() < PROMPT, "ran {:?}", started.elapsed());
    let failed = app::storage::StorageError::from(failed);
    assert!(
        matches!(failed, app::storage::StorageError::Unavailable { .. }),
        "{failed:?}"
    );
}
