//! Sign-in's commands (`users add`) and settings, run as a user would run
//! them.

use crate::auth::helpers::SignIn;
use crate::cli::{cli, text};
use crate::helpers::spawn_app;

#[tokio::test]
async fn users_add_reads_the_password_from_stdin_and_the_user_can_log_in() {
    let app = spawn_app().await;
    let url = &app.settings.database.url;

    let out = cli(
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

    let admin = cli(
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

    let taken = cli(&["users", "add", "DAVE"], &env, "long-enough-pw\n");
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("taken"),
        "{}",
        text(&taken.stderr)
    );

    let bad_name = cli(&["users", "add", "no spaces"], &env, "long-enough-pw\n");
    assert!(!bad_name.status.success());
    assert!(
        text(&bad_name.stderr).contains("usernames are"),
        "{}",
        text(&bad_name.stderr)
    );

    let short = cli(&["users", "add", "erin"], &env, "short\n");
    assert!(!short.status.success());
    assert!(
        text(&short.stderr).contains("at least 8"),
        "{}",
        text(&short.stderr)
    );
}

#[test]
fn passwords_are_never_taken_from_arguments() {
    let out = cli(&["users", "add", "frank", "--password", "x"], &[], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--password"));
}

#[test]
fn config_check_prints_the_sign_in_settings_after_the_cores() {
    let env = [
        ("DATABASE_URL", "postgres://svc:hunter2@db:5432/svc"),
        ("REDIS_URL", "redis://:redispw@cache:6379/0"),
    ];
    let out = cli(&["config", "check"], &env, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("SESSION_TTL_SECONDS=86400"), "{printed}");
    let position = |name: &str| {
        printed
            .find(&format!("\n{name}="))
            .unwrap_or_else(|| panic!("no {name}: {printed}"))
    };
    let core_last = position("GRACEFUL_TIMEOUT");
    for name in [
        "SESSION_TTL_SECONDS",
        "SESSION_IDLE_SECONDS",
        "LOGIN_MAX_FAILURES",
        "LOGIN_FAILURE_WINDOW_SECONDS",
        "HASH_CONCURRENCY",
    ] {
        assert!(
            position(name) > core_last,
            "{name} before the core's: {printed}"
        );
    }
}
