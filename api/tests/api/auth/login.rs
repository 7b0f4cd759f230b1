use serde_json::Value;
use uuid::Uuid;

use crate::auth::helpers::{ServedSignIn, SignIn, PASSWORD};
use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Servers};
use crate::observability::{answered_line, scrape, value};
use crate::serving::Served;

#[tokio::test]
async fn login_returns_a_fresh_uuid_v4_token_in_header_and_body() {
    let app = spawn_app().await;
    app.create_user("alice").await;

    let response = app.post_login("alice", PASSWORD).await;

    assert_eq!(response.status(), 200);
    let header = response.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(header, format!("Bearer {token}"));
    assert_eq!(body["token_type"], "Bearer");
    // Unused, a token lives for the idle timeout (within its lifetime).
    let auth = &app.settings.modules.auth;
    let expires_in = auth.session_idle_seconds.min(auth.session_ttl_seconds);
    assert_eq!(body["expires_in"], expires_in);
    assert_eq!(Uuid::parse_str(token).unwrap().get_version_num(), 4);
    // Stored in Redis with the TTL it announced.
    let ttl = app.session_key_ttl(token).await;
    assert!(ttl > 0 && ttl as u64 <= expires_in, "ttl {ttl}");
}

#[tokio::test]
async fn every_login_makes_a_new_token_and_all_of_them_work() {
    let app = spawn_app().await;
    app.create_user("alice").await;
    let first = app.login("alice").await;
    let second = app.login("alice").await;
    assert_ne!(first, second);
    assert_eq!(app.get_name(&first).await.status(), 200);
    assert_eq!(app.get_name(&second).await.status(), 200);
}

#[tokio::test]
async fn usernames_are_case_insensitive() {
    let app = spawn_app().await;
    app.create_user("Alice").await;
    assert_eq!(app.post_login("aLiCe", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_401() {
    let app = spawn_app().await;
    app.create_user("alice").await;

    let wrong_password = app.post_login("alice", "not the password").await;
    let unknown_user = app.post_login("mallory", PASSWORD).await;

    assert!(wrong_password.headers().get("authorization").is_none());
    // Alike but for the request's own id.
    let mut wrong_password = assert_problem(wrong_password, 401).await;
    let mut unknown_user = assert_problem(unknown_user, 401).await;
    wrong_password["request_id"].take();
    unknown_user["request_id"].take();
    assert_eq!(wrong_password, unknown_user);
}

/// An unknown username is checked against a dummy hash with the same
/// parameters as real ones (a unit test in passwords.rs pins that), so it
/// costs one full verification, as a wrong password does, and response times
/// do not reveal which usernames exist. Counted rather than timed: timings on
/// a shared CI machine are noise.
#[tokio::test]
async fn unknown_users_cost_a_full_verification_like_wrong_passwords() {
    let app = spawn_app().await;
    app.create_user("alice").await;
    let verifications = || app.auth().passwords.verifications();

    let before = verifications();
    assert_eq!(app.post_login("alice", "wrong").await.status(), 401);
    let after_wrong_password = verifications();
    assert_eq!(app.post_login("mallory", "wrong").await.status(), 401);
    let after_unknown_user = verifications();

    assert_eq!(after_wrong_password - before, 1);
    assert_eq!(after_unknown_user - after_wrong_password, 1);
}

#[tokio::test]
async fn malformed_login_bodies_are_400_problems() {
    let app = spawn_app().await;
    let cases = [
        "not json",
        "{}",
        r#"{"username": "alice"}"#,
        r#"{"username": 5, "password": "x"}"#,
    ];
    for body in cases {
        let response = app
            .client
            .post(app.url("/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400).await;
    }
    let overlong = "x".repeat(2000);
    assert_problem(app.post_login("alice", &overlong).await, 400).await;
}

#[tokio::test]
async fn logins_are_counted_by_outcome_and_routes_by_template() {
    let app = spawn_app().await;
    app.create_user("metered").await;
    let before = scrape(&app.address).await;

    assert_eq!(
        app.post_login("metered", "wrong password").await.status(),
        401
    );
    assert_eq!(app.post_login("metered", PASSWORD).await.status(), 200);
    let admin_only = app.client.delete(app.url("/v2/users/42/sessions"));
    assert_eq!(admin_only.send().await.unwrap().status(), 401);

    let after = scrape(&app.address).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let outcome = |outcome| [("outcome", outcome)];
    assert_eq!(delta("logins_total", &outcome("invalid_credentials")), 1.0);
    assert_eq!(delta("logins_total", &outcome("success")), 1.0);
    assert_eq!(delta("logins_total", &outcome("throttled")), 0.0);
    // The path's id is not a label: one series for every user.
    let template = [("route", "/v2/users/{id}/sessions"), ("status", "401")];
    assert_eq!(delta("http_requests_total", &template), 1.0);
}

#[tokio::test]
async fn request_logs_name_the_user_and_never_the_token() {
    let served = Served::start(1, &[("LOG_FORMAT", "json")]).await;
    served.create_user("logged").await;
    let login = served
        .client
        .post(format!("{}/login", served.base))
        .json(&serde_json::json!({"username": "logged", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let token = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let get_name = served
        .client
        .get(format!("{}/getName", served.base))
        .header("x-request-id", "named-4711")
        .bearer_auth(&token);
    assert_eq!(get_name.send().await.unwrap().status(), 200);

    let line = answered_line(&served, "named-4711").await;
    assert_eq!(line["span"]["route"], "/getName");
    assert!(
        line["span"]["user_id"].as_i64().is_some_and(|id| id > 0),
        "{line}"
    );
    assert!(
        !served.log().contains(&token),
        "a session token reached the log"
    );
}

/// The token is in the answer: no cache, shared or the browser's, may keep
/// it.
#[tokio::test]
async fn the_login_answer_is_never_stored() {
    let app = spawn_app().await;
    app.create_user("alice").await;
    let response = app.post_login("alice", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

/// Usernames are ASCII. Spellings that PostgreSQL's `lower()` folds onto
/// an ASCII username are nobody's: they never log in, and never count
/// against another throttle than the account's, so a locked account stays
/// locked whatever the spelling.
#[tokio::test]
async fn odd_spellings_of_a_username_never_reach_the_account() {
    let app = spawn_app_with(&Servers::shared(), &["--login-max-failures", "3"]).await;
    // Dotted capital I (U+0130) and the Kelvin sign (U+212A).
    let accounts = [
        ("victim", ["vİctim", "VİCTİM"]),
        ("kirk", ["\u{212A}irk", "\u{212A}IRK"]),
    ];
    let client = app.db.get().await.unwrap();
    for (username, spellings) in accounts {
        app.create_user(username).await;
        for spelling in spellings {
            // The database would take it for the account: only the service
            // stands between this spelling and the account.
            let folds: bool = client
                .query_one("SELECT lower($1) = lower($2)", &[&spelling, &username])
                .await
                .unwrap()
                .get(0);
            assert!(folds, "{spelling:?} does not fold onto {username}");
            let response = app.post_login(spelling, PASSWORD).await;
            assert_eq!(response.status(), 401, "{spelling:?} logged in");
        }
        // ASCII case is the account's own, and counts against it.
        assert_eq!(
            app.post_login(&username.to_uppercase(), "wrong")
                .await
                .status(),
            401
        );
        for _ in 0..2 {
            assert_eq!(app.post_login(username, "wrong").await.status(), 401);
        }
        assert_problem(app.post_login(username, PASSWORD).await, 429).await;
        for spelling in spellings {
            let response = app.post_login(spelling, PASSWORD).await;
            assert_ne!(response.status(), 200, "{spelling:?} got past the lock");
        }
    }
}
