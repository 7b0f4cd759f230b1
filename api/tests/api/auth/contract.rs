//! schemathesis against the served OpenAPI document, every phase, with a
//! valid admin token (a fresh one for each case: some operations end the
//! caller's sessions): no 5xx, and no answer that breaks the documented
//! schema, status codes and headers included.
//!
//! The seed is fixed so the test command is repeatable; set
//! `SCHEMATHESIS_SEED` to explore others.

use crate::auth::helpers::PASSWORD;
use crate::contract::schemathesis;
use crate::helpers::{repo_root, spawn_app_with, Servers};

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_broken_contract() {
    // Rate limits would turn a fuzzer into 429s: random current passwords
    // sent to /v2/password count as failed logins. And the hook logs in
    // for every case, ahead of sending it: a cap on sessions would end the
    // tokens of cases not yet sent.
    let limits = [
        "--rate-limit-per-minute=0",
        "--login-max-failures=1000000",
        "--sessions-per-user=1000",
    ];
    let app = spawn_app_with(&Servers::shared(), &limits).await;
    // Far from any id the fuzzer tries, so it cannot demote its own admin.
    let hash = app::modules::auth::passwords::hash_blocking(PASSWORD).unwrap();
    let client = app.db.get().await.unwrap();
    client
        .execute(
            "INSERT INTO users (id, username, name, password_hash, role) OVERRIDING SYSTEM VALUE \
             VALUES (7345918263, 'fuzzer', 'Fuzzer', $1, 'admin')",
            &[&hash],
        )
        .await
        .unwrap();
    let report = schemathesis(&app, |command| {
        command
            .env("PYTHONPATH", repo_root().join("api/tests/schemathesis"))
            .env("SCHEMATHESIS_HOOKS", "fresh_token")
            .env("API_BASE_URL", &app.address)
            .env("API_USERNAME", "fuzzer")
            .env("API_PASSWORD", PASSWORD);
    })
    .await;

    assert!(!report.contains("Authentication failed"), "{report}");
}
