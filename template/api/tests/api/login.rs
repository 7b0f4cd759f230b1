use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app, PASSWORD};

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
    let expires_in = app
        .settings
        .session_idle_seconds
        .min(app.settings.session_ttl_seconds);
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
    let wrong_password = assert_problem(wrong_password, 401).await;
    let unknown_user = assert_problem(unknown_user, 401).await;
    assert_eq!(wrong_password, unknown_user);
}

/// An unknown username is checked against a dummy hash with the same
/// parameters as real ones (a unit test in password.rs pins that), so it
/// costs one full verification, as a wrong password does, and response times
/// do not reveal which usernames exist. Counted rather than timed: timings on
/// a shared CI machine are noise.
#[tokio::test]
async fn unknown_users_cost_a_full_verification_like_wrong_passwords() {
    let app = spawn_app().await;
    app.create_user("alice").await;
    let verifications = || app.passwords.verifications();

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
