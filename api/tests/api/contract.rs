//! schemathesis against the served OpenAPI document, every phase: no 5xx,
//! and no answer that breaks the documented schema, status codes and
//! headers included.
//!
//! The seed is fixed so the test command is repeatable; set
//! `SCHEMATHESIS_SEED` to explore others.

use std::process::Command;

use crate::cli::text;
use crate::deploy::tool;
use crate::helpers::{spawn_app_with, Servers};

/// Runs schemathesis against `app` (its settings and what `configure` adds
/// to the command) and returns its report, asserting it passed.
pub async fn schemathesis(
    app: &crate::helpers::TestApp,
    configure: impl FnOnce(&mut Command),
) -> String {
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261122".into());
    let mut command = Command::new(tool("schemathesis"));
    command
        .args(["run", &app.url("/openapi.json")])
        .args(["--checks", "all", "--max-examples", "30", "--seed", &seed])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir());
    configure(&mut command);

    // Blocking, off the runtime that serves the app.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();

    let report = text(&output.stdout);
    assert!(output.status.success(), "{report}{}", text(&output.stderr));
    report
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_broken_contract() {
    // The request budget would turn a fuzzer into 429s.
    let limits = ["--rate-limit-per-minute=0"];
    let app = spawn_app_with(&Servers::shared(), &limits).await;
    schemathesis(&app, |_| {}).await;
}
