//! Sign-in's schema reaches databases that exist already: one an older
//! release made, one that two processes migrate at once, one whose history
//! disagrees with the files, and one where a migration fails.

use std::process::Command;

use serde_json::json;

use super::helpers::{password_hash, SignIn};
use crate::cli::{cli, run_with_input, text};
use crate::helpers::{empty_database, fresh_database, spawn_app_on, Servers};
use crate::schema::{connect, first_difference, schema_of};
use crate::serving::Served;

/// The schema as release 2f06383 made it with its init.sql: users and the
/// outbox, before `users.name_version` (and before migrations) existed.
const RELEASE_2F06383: &str = include_str!("fixtures/init-2f06383.sql");

#[tokio::test]
async fn an_older_release_s_database_is_migrated_to_today_s_schema_and_keeps_its_users() {
    let servers = Servers::shared();
    let url = empty_database(&servers).await;
    let client = connect(&url).await;
    client.batch_execute(RELEASE_2F06383).await.unwrap();
    client
        .execute(
            "INSERT INTO users (username, name, password_hash) VALUES ('ada', 'Ada', $1)",
            &[&password_hash()],
        )
        .await
        .unwrap();

    // The current service's migrate step, as a deployment runs it.
    let out = cli(&["db", "migrate"], &[("DATABASE_URL", &url)], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (upgraded, fresh) = (schema_of(&url), schema_of(&fresh_database(&servers).await));
    assert!(
        upgraded == fresh,
        "upgraded / fresh: {}",
        first_difference(&upgraded, &fresh)
    );

    // What failed with a 500 on such a database before: the name's version.
    let app = spawn_app_on(&servers, &url).await;
    let token = app.login("ada").await;
    let name = app.get_name(&token).await;
    assert_eq!(name.status(), 200);
    let renamed = app
        .post_set_name(&token, &json!({ "name": "Ada Lovelace" }))
        .await;
    assert_eq!(renamed.status(), 200);
    let name: serde_json::Value = app.get_name(&token).await.json().await.unwrap();
    assert_eq!(name["name"], "Ada Lovelace");
}

#[tokio::test]
async fn two_services_starting_at_once_apply_each_migration_once_and_both_serve() {
    let url = empty_database(&Servers::shared()).await;
    let database = [("DATABASE_URL", url.as_str())];
    let (first, second) = tokio::join!(Served::start(1, &database), Served::start(1, &database));
    for served in [&first, &second] {
        assert_eq!(served.get("/readyz").await, Some(200));
    }
    let logs = [first.log(), second.log()];
    let applied = logs
        .iter()
        .filter(|log| log.contains("migrations applied"))
        .count();
    let waited = logs
        .iter()
        .filter(|log| log.contains("schema up to date"))
        .count();
    assert_eq!((applied, waited), (1, 1), "{}\n---\n{}", logs[0], logs[1]);
    // Each history holds every version of its set, once.
    let client = connect(&url).await;
    for set in app::startup::migrations() {
        let recorded: Vec<i32> = client
            .query(
                &format!("SELECT version FROM {} ORDER BY version", set.history),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let files: Vec<i32> = set
            .runner
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .collect();
        assert_eq!(recorded, files, "{}", set.history);
    }
}

#[tokio::test]
async fn an_applied_migration_that_was_edited_is_refused_by_name() {
    let url = fresh_database(&Servers::shared()).await;
    // What editing V2__outbox.sql after it was applied looks like to the
    // history: the file's checksum no longer matches.
    connect(&url)
        .await
        .execute(
            "UPDATE auth_schema_history SET checksum = '1' WHERE version = 2",
            &[],
        )
        .await
        .unwrap();
    let out = cli(&["db", "migrate"], &[("DATABASE_URL", &url)], "");
    assert!(!out.status.success());
    let error = text(&out.stderr);
    assert!(error.contains("V2__outbox"), "{error}");
}

#[tokio::test]
async fn a_failing_migration_leaves_the_last_good_version_and_the_service_does_not_start() {
    let url = empty_database(&Servers::shared()).await;
    // V2 creates the outbox table; a type of that name makes it fail.
    connect(&url)
        .await
        .batch_execute("CREATE TYPE outbox AS ENUM ('in the way')")
        .await
        .unwrap();
    // Bounded: were the migration to pass, `serve` would serve on.
    let mut command = Command::new("timeout");
    command
        .args([
            "60",
            env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))),
        ])
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", Servers::shared().redis_url)
        .env("BIND", "127.0.0.1:0")
        .current_dir(std::env::temp_dir());
    let serve = run_with_input(&mut command, "");
    assert!(!serve.status.success(), "the service started");
    let error = text(&serve.stderr);
    assert!(
        error.contains("migrations failed") && error.contains("V2__outbox"),
        "{error}"
    );

    let client = connect(&url).await;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM auth_schema_history ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(applied, [1], "V1 stays, V2 is rolled back, V3 never runs");
    let users: bool = client
        .query_one("SELECT to_regclass('users') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(users, "V1's table is gone");
}
