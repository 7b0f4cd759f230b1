//! The failed-login throttle: per account, from any address, across
//! workers, kept in Redis beside the core's request budgets.

use reqwest::StatusCode;
use serde_json::json;

use crate::auth::helpers::{ServedSignIn, SignIn, PASSWORD};
use crate::helpers::{free_ports, spawn_app};
use crate::ratelimits::assert_limited;
use crate::serving::Served;

/// Two workers, each on a port of its own (the first returned), allowing 3
/// failed logins per account, and the account `victim`.
async fn two_workers_with_a_victim() -> (Served, u16) {
    let first = free_ports(2);
    let served = Served::start(
        2,
        &[
            ("FIRST_WORKER_PORT", &first.to_string()),
            ("LOGIN_MAX_FAILURES", "3"),
        ],
    )
    .await;
    served.create_user("victim").await;
    (served, first)
}

#[tokio::test]
async fn failed_logins_throttle_the_account_across_workers_and_addresses() {
    let (served, first) = two_workers_with_a_victim().await;
    served.create_user("bystander").await;
    let login = |port: u16, address: String, username: &'static str, password: &'static str| {
        served
            .client
            .post(format!("http://127.0.0.1:{port}/login"))
            .header("x-real-ip", address)
            .json(&json!({ "username": username, "password": password }))
            .send()
    };
    // Each worker answers on its own port: the attempts alternate between
    // them, each from a different address.
    let workers = [
        served.worker_at(first).await,
        served.worker_at(first + 1).await,
    ];
    assert_ne!(workers[0], workers[1]);

    for attempt in 0..3u16 {
        let port = first + attempt % 2;
        let address = format!("203.0.113.{attempt}");
        let failed = login(port, address, "victim", "wrong guess").await.unwrap();
        assert_eq!(
            failed.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            served.log()
        );
    }

    // Now even the right password, from a fresh address, is refused...
    let refused = login(first + 1, "192.0.2.77".into(), "victim", PASSWORD)
        .await
        .unwrap();
    assert_limited(refused).await;
    // ...while other accounts log in as usual.
    let other = login(first, "203.0.113.0".into(), "bystander", PASSWORD)
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

/// Each attempt takes its place in the account's count before its password
/// is checked, in one atomic step: however many arrive at once, from
/// whatever addresses, no more than LOGIN_MAX_FAILURES are checked.
#[tokio::test]
async fn parallel_wrong_guesses_reach_at_most_the_allowed_password_checks() {
    let app = spawn_app().await;
    app.create_user("victim").await;
    let allowed = app.settings.modules.auth.login_max_failures;
    let before = app.auth().passwords.verifications();

    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..24 {
        let guess = app
            .client
            .post(app.url("/login"))
            .header("x-real-ip", format!("203.0.113.{n}"))
            .json(&json!({ "username": "victim", "password": format!("guess {n}") }));
        guesses.spawn(async move { guess.send().await.unwrap().status() });
    }
    let mut refused = 0;
    while let Some(status) = guesses.join_next().await {
        match status.unwrap() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("a guess got {other}"),
        }
    }

    let checked = app.auth().passwords.verifications() - before;
    assert!(
        checked <= allowed,
        "{checked} passwords checked, {allowed} allowed"
    );
    assert_eq!(refused, 24 - allowed);
}

/// The same across two workers, each guess from another address: the count
/// is Redis's, so every worker reserves from the same one.
#[tokio::test]
async fn parallel_wrong_guesses_across_workers_are_checked_at_most_the_allowed_times() {
    let (served, first) = two_workers_with_a_victim().await;
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..24u16 {
        let guess = served
            .client
            .post(format!("http://127.0.0.1:{}/login", first + n % 2))
            .header("x-real-ip", format!("198.51.100.{n}"))
            .json(&json!({ "username": "victim", "password": format!("guess {n}") }));
        guesses.spawn(async move { guess.send().await.unwrap().status() });
    }
    let mut checked = 0;
    while let Some(status) = guesses.join_next().await {
        match status.unwrap() {
            // Only a checked password gets 401.
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a guess got {other}"),
        }
    }
    assert!(checked <= 3, "{checked} passwords checked, 3 allowed");
}
