//! Stopping PostgreSQL or Redis under a running service with signed-in
//! users: prompt 503s, never a hang and never a pass (a session that cannot
//! be checked is not taken on trust); and recovery without a restart once
//! they return.

use std::time::Duration;

use crate::auth::helpers::{SignIn, PASSWORD};
use crate::helpers::{assert_problem, eventually, spawn_app_with, DedicatedServices, TestApp};
use crate::outages::promptly;

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

    let response = promptly("getName", app.get_name(&token)).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    assert_problem(promptly("readyz", app.get("/readyz")).await, 503).await;
    let login = app.post_login("alice", PASSWORD);
    assert_problem(promptly("login", login).await, 503).await;

    services.start_redis();

    assert!(
        recovers(&app, &token).await,
        "no recovery after Redis returned"
    );
}

#[tokio::test]
async fn a_frozen_redis_is_a_prompt_503_never_a_pass_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    let (_, token) = app.signed_in_user("alice").await;

    services.pause_redis();

    for _ in 0..3 {
        let response = promptly("getName", app.get_name(&token)).await;
        assert_eq!(response.headers()["retry-after"], "1");
        assert_problem(response, 503).await;
    }
    let search = promptly("search", app.get_with_token("/v2/users?q=alice", &token)).await;
    assert_problem(search, 503).await;

    services.resume_redis();

    assert!(
        recovers(&app, &token).await,
        "no recovery after Redis woke up"
    );
}

#[tokio::test]
async fn postgres_outage_is_a_prompt_503_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    let (_, token) = app.signed_in_user("alice").await;

    services.stop_postgres();

    let response = promptly("getName", app.get_name(&token)).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    let ready = promptly("readyz", app.get("/readyz")).await;
    assert_eq!(ready.headers()["retry-after"], "1");
    assert_problem(ready, 503).await;
    // Endpoints that need no database keep working.
    assert_eq!(app.get("/v1/hello").await.status(), 200);

    services.start_postgres();

    assert!(
        recovers(&app, &token).await,
        "no recovery after PostgreSQL returned"
    );
}

/// A write while PostgreSQL is frozen: its pooled connection takes the
/// statement and nothing answers. The request is cut off at
/// REQUEST_TIMEOUT_MS with a 503 problem document, and the service serves
/// again once PostgreSQL wakes.
#[tokio::test]
async fn a_write_to_a_frozen_postgres_is_a_prompt_503_and_the_service_recovers() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &["--request-timeout-ms=2000"]).await;
    let (_, token) = app.signed_in_user("alice").await;
    let rename = |name: String| {
        let (app, token) = (&app, &token);
        async move {
            app.post_set_name(token, &serde_json::json!({ "name": name }))
                .await
        }
    };
    assert_eq!(rename("Alice".into()).await.status(), 200);

    services.freeze_postgres();

    for attempt in 0..2 {
        let response = promptly("setName", rename(format!("Frozen {attempt}"))).await;
        assert_eq!(response.headers()["retry-after"], "1");
        assert_problem(response, 503).await;
    }

    services.thaw_postgres();

    assert!(
        recovers(&app, &token).await,
        "no recovery after PostgreSQL woke up"
    );
    assert_eq!(rename("Alice again".into()).await.status(), 200);
}
