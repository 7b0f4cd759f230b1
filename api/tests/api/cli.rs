//! The binary's commands, run as a user would run them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::helpers::{empty_database, spawn_app, spawn_app_on, Servers};

/// Runs the binary with only `envs` (and PATH) in its environment.
pub fn cli(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    cli_in(&std::env::temp_dir(), args, envs, stdin)
}

/// Runs the binary in `dir` with only `envs` (and PATH) in its environment.
pub fn cli_in(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut command = Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .current_dir(dir);
    run_with_input(&mut command, stdin)
}

/// Runs `command` to the end with `input` on its stdin.
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn db_migrate_applies_each_migration_once_and_db_status_lists_them() {
    let url = empty_database(&Servers::shared()).await;
    let env = [("DATABASE_URL", url.as_str())];
    let status = cli(&["db", "status"], &env, "");
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("schema_history: V1__init pending"),
        "{}",
        text(&status.stdout)
    );

    let first = cli(&["db", "migrate"], &env, "");
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("applied schema_history: V1__init"),
        "{}",
        text(&first.stdout)
    );
    let again = cli(&["db", "migrate"], &env, "");
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), "schema up to date\n");

    let status = text(&cli(&["db", "status"], &env, "").stdout);
    assert!(
        status.contains("schema_history: V1__init applied "),
        "{status}"
    );
    assert!(!status.contains("pending"), "{status}");

    // A database so migrated is one the service is ready on.
    let app = spawn_app_on(&Servers::shared(), &url).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn config_check_prints_settings_with_secrets_redacted() {
    let env = [
        ("DATABASE_URL", "postgres://svc:hunter2@db:5432/svc"),
        ("BIND", "0.0.0.0:8080"),
        ("REDIS_URL", "redis://:redispw@cache:6379/0"),
    ];
    let out = cli(&["config", "check"], &env, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("DATABASE_URL=postgres://svc:***@db:5432/svc"),
        "{printed}"
    );
    assert!(printed.contains("BIND=0.0.0.0:8080"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("REDIS_URL=redis://:***@cache:6379/0"),
        "{printed}"
    );
    assert!(!printed.contains("redispw"), "{printed}");
}

#[tokio::test]
async fn config_check_fails_on_invalid_settings() {
    let redis = ("REDIS_URL", "redis://127.0.0.1:6379");
    let missing = cli(&["config", "check"], &[redis], "");
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("DATABASE_URL"));

    let pool_of_none = cli(
        &["config", "check", "--database-pool-size", "0"],
        &[("DATABASE_URL", "postgres://x/y"), redis],
        "",
    );
    assert!(!pool_of_none.status.success());
    let stderr = text(&pool_of_none.stderr);
    assert!(stderr.contains("DATABASE_POOL_SIZE"), "{stderr}");
    let bad_redis = cli(
        &["config", "check"],
        &[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "nonsense://"),
        ],
        "",
    );
    assert!(!bad_redis.status.success());
    let stderr = text(&bad_redis.stderr);
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}

/// A container's health is liveness: `healthcheck` asks /healthz, which
/// holds while Redis is away; `--ready` asks /readyz, which does not.
#[tokio::test]
async fn healthcheck_asks_liveness_and_readiness_only_when_told() {
    let services = crate::helpers::DedicatedServices::start();
    let app = crate::helpers::spawn_app_with(&services.servers(), &[]).await;
    let bind = app.address.trim_start_matches("http://").to_owned();
    let probe = |ready: bool| {
        let bind = bind.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["healthcheck"];
            if ready {
                args.push("--ready");
            }
            cli(&args, &[("BIND", &bind)], "")
        })
    };
    assert!(probe(false).await.unwrap().status.success());
    assert!(probe(true).await.unwrap().status.success());

    services.stop_redis();

    let live = probe(false).await.unwrap();
    assert!(live.status.success(), "{}", text(&live.stderr));
    assert!(
        text(&live.stdout).contains("/healthz"),
        "{}",
        text(&live.stdout)
    );
    let ready = probe(true).await.unwrap();
    assert!(!ready.status.success());
    assert!(
        text(&ready.stderr).contains("/readyz answered 503"),
        "{}",
        text(&ready.stderr)
    );
}

#[tokio::test]
async fn healthcheck_exits_0_only_when_ready() {
    let app = spawn_app().await;
    let ready_url = app.url("/readyz");
    let up =
        tokio::task::spawn_blocking(move || cli(&["healthcheck", "--url", &ready_url], &[], ""))
            .await
            .unwrap();
    assert!(up.status.success(), "{}", text(&up.stderr));

    let missing_url = app.url("/no-such-probe");
    let wrong =
        tokio::task::spawn_blocking(move || cli(&["healthcheck", "--url", &missing_url], &[], ""))
            .await
            .unwrap();
    assert!(!wrong.status.success());

    let down = cli(
        &["healthcheck", "--url", "http://127.0.0.1:9/readyz"],
        &[],
        "",
    );
    assert!(!down.status.success());
}

#[test]
fn env_file_fills_in_settings_and_the_real_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, database: &str| {
        let contents = [
            format!("DATABASE_URL={database}"),
            "BIND=127.0.0.1:7000".to_owned(),
            "REDIS_URL=redis://127.0.0.1:6379".to_owned(),
        ]
        .join("\n");
        std::fs::write(dir.path().join(name), contents).unwrap();
    };
    file(".env.local", "postgres://from:file@local/db");
    file("other.env", "postgres://other:file@other/db");

    let defaulted = cli_in(
        dir.path(),
        &["config", "check"],
        &[("BIND", "127.0.0.1:9000")],
        "",
    );
    let printed = text(&defaulted.stdout);
    assert!(defaulted.status.success(), "{}", text(&defaulted.stderr));
    assert!(
        printed.contains("DATABASE_URL=postgres://from:***@local/db"),
        "{printed}"
    );
    assert!(printed.contains("BIND=127.0.0.1:9000"), "{printed}");

    let named = cli_in(
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

    let missing = cli_in(
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

#[tokio::test]
async fn db_migrate_waits_while_another_process_migrates_then_applies() {
    let url = empty_database(&Servers::shared()).await;
    // Another process's run, as far as the lock can tell.
    let holder = crate::schema::connect(&url).await;
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&app::storage::migrations::LOCK],
        )
        .await
        .unwrap();
    let mut migrate = Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
        .args(["db", "migrate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(migrate.try_wait().unwrap().is_none(), "it did not wait");
    let history: bool = holder
        .query_one("SELECT to_regclass('schema_history') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!history, "it migrated under another's lock");

    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&app::storage::migrations::LOCK],
        )
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || migrate.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied schema_history: V1__init"));
}
