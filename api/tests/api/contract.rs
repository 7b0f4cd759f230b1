//! schemathesis against the served OpenAPI document, every phase, with a
//! valid admin token (a fresh one for each case: some operations end the
//! caller's sessions): no 5xx, and no answer that breaks the documented
//! schema, status codes and headers included.
//!
//! The seed is fixed so the test command is repeatable; set
//! `SCHEMATHESIS_SEED` to explore others.

use std::process::Command;

use crate::cli::text;
use crate::deploy::tool;
use crate::helpers::{repo_root, spawn_app_with, Servers, PASSWORD};

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_broken_contract() {
    // Rate limits would turn a fuzzer into 429s: random current passwords
    // sent to /v2/password count as failed logins.
    let limits = ["--rate-limit-per-minute=0", "--login-max-failures=1000000"];
    let app = spawn_app_with(&Servers::shared(), &limits).await;
    // Far from any id the fuzzer tries, so it cannot demote its own admin.
    let hash = app::password::hash_blocking(PASSWORD).unwrap();
    let client = app.db.get().await.unwrap();
    client
        .execute(
            "INSERT INTO users (id, username, name, password_hash, role) OVERRIDING SYSTEM VALUE \
             VALUES (7345918263, 'fuzzer', 'Fuzzer', $1, 'admin')",
            &[&hash],
        )
        .await
        .unwrap();
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261122".into());
    let mut command = Command::new(tool("schemathesis"));
    command
        .args(["run", &app.url("/openapi.json")])
        .args(["--checks", "all", "--max-examples", "30", "--seed", &seed])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir());
    command
        .env("PYTHONPATH", repo_root().join("api/tests/schemathesis"))
        .env("SCHEMATHESIS_HOOKS", "fresh_token")
        .env("API_BASE_URL", &app.address)
        .env("API_USERNAME", "fuzzer")
        .env("API_PASSWORD", PASSWORD);

    // Blocking, off the runtime that serves the app.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();

    let report = text(&output.stdout);
    assert!(output.status.success(), "{report}{}", text(&output.stderr));
    assert!(!report.contains("Authentication failed"), "{report}");
}
