//! The `api` binary's commands, run as a user would run them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::helpers::{fresh_database, spawn_app, Servers};

fn api(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    api_in(&std::env::temp_dir(), args, envs, stdin)
}

/// Runs the binary in `dir` with only `envs` (and PATH) in its environment.
fn api_in(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn db_init_is_idempotent() {
    let url = fresh_database(&Servers::shared()).await;
    for _ in 0..2 {
        let out = api(&["db", "init"], &[("DATABASE_URL", &url)], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[tokio::test]
async fn users_add_reads_the_password_from_stdin_and_the_user_can_log_in() {
    let app = spawn_app().await;
    let url = &app.settings.database.url;

    let out = api(
        &["users", "add", "Carol", "--name", "Carol C."],
        &[("DATABASE_URL", url)],
        "s3cret-enough\n",
    );

    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created user Carol"));
    assert_eq!(app.post_login("carol", "s3cret-enough").await.status(), 200);
    let client = app.db.get().await.unwrap();
    let row = client
        .query_one("SELECT name, role FROM users WHERE username = 'Carol'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Carol C.");
    assert_eq!(row.get::<_, String>(1), "user");

    let admin = api(
        &["users", "add", "root_admin", "--admin"],
        &[("DATABASE_URL", url)],
        "s3cret-enough\n",
    );
    assert!(admin.status.success(), "{}", text(&admin.stderr));
    let role: String = client
        .query_one("SELECT role FROM users WHERE username = 'root_admin'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "admin");
}

#[tokio::test]
async fn users_add_refuses_taken_usernames_bad_usernames_and_short_passwords() {
    let app = spawn_app().await;
    app.create_user("dave").await;
    let url = &app.settings.database.url;
    let env = [("DATABASE_URL", url.as_str())];

    let taken = api(&["users", "add", "DAVE"], &env, "long-enough-pw\n");
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("taken"),
        "{}",
        text(&taken.stderr)
    );

    let bad_name = api(&["users", "add", "no spaces"], &env, "long-enough-pw\n");
    assert!(!bad_name.status.success());
    assert!(
        text(&bad_name.stderr).contains("usernames are"),
        "{}",
        text(&bad_name.stderr)
    );

    let short = api(&["users", "add", "erin"], &env, "short\n");
    assert!(!short.status.success());
    assert!(
        text(&short.stderr).contains("at least 8"),
        "{}",
        text(&short.stderr)
    );
}

#[tokio::test]
async fn config_check_prints_settings_with_secrets_redacted() {
    let out = api(
        &["config", "check"],
        &[
            ("DATABASE_URL", "postgres://api:hunter2@db:5432/api"),
            ("REDIS_URL", "redis://:redispw@cache:6379/0"),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("DATABASE_URL=postgres://api:***@db:5432/api"),
        "{printed}"
    );
    assert!(
        printed.contains("REDIS_URL=redis://:***@cache:6379/0"),
        "{printed}"
    );
    assert!(printed.contains("SESSION_TTL_SECONDS=86400"), "{printed}");
    assert!(!printed.contains("hunter2") && !printed.contains("redispw"));
}

#[tokio::test]
async fn config_check_fails_on_invalid_settings() {
    let missing = api(&["config", "check"], &[("REDIS_URL", "redis://x")], "");
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("DATABASE_URL"));

    let bad = api(
        &["config", "check"],
        &[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "nonsense://"),
        ],
        "",
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("REDIS_URL"),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test]
async fn healthcheck_exits_0_only_when_ready() {
    let app = spawn_app().await;
    let ready_url = app.url("/readyz");
    let up =
        tokio::task::spawn_blocking(move || api(&["healthcheck", "--url", &ready_url], &[], ""))
            .await
            .unwrap();
    assert!(up.status.success(), "{}", text(&up.stderr));

    let missing_url = app.url("/no-such-probe");
    let wrong =
        tokio::task::spawn_blocking(move || api(&["healthcheck", "--url", &missing_url], &[], ""))
            .await
            .unwrap();
    assert!(!wrong.status.success());

    let down = api(
        &["healthcheck", "--url", "http://127.0.0.1:9/readyz"],
        &[],
        "",
    );
    assert!(!down.status.success());
}

#[test]
fn passwords_are_never_taken_from_arguments() {
    let out = api(&["users", "add", "frank", "--password", "x"], &[], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--password"));
}

#[test]
fn env_file_fills_in_settings_and_the_real_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env.local"),
        "DATABASE_URL=postgres://from:file@local/db\nREDIS_URL=redis://from-file:6379\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("other.env"),
        "DATABASE_URL=postgres://other:file@other/db\nREDIS_URL=redis://other:6379\n",
    )
    .unwrap();

    let defaulted = api_in(
        dir.path(),
        &["config", "check"],
        &[("REDIS_URL", "redis://from-env:6379")],
        "",
    );
    let printed = text(&defaulted.stdout);
    assert!(defaulted.status.success(), "{}", text(&defaulted.stderr));
    assert!(
        printed.contains("DATABASE_URL=postgres://from:***@local/db"),
        "{printed}"
    );
    assert!(
        printed.contains("REDIS_URL=redis://from-env:6379"),
        "{printed}"
    );

    let named = api_in(
        dir.path(),
        &["--env-file", "other.env", "config", "check"],
        &[],
        "",
    );
    let printed = text(&named.stdout);
    assert!(
        printed.contains("DATABASE_URL=postgres://other:***@other/db"),
        "{printed}"
    );

    let missing = api_in(
        dir.path(),
        &["config", "check", "--env-file=nope.env"],
        &[],
        "",
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("env file"),
        "{}",
        text(&missing.stderr)
    );
}
