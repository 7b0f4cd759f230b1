//! Sign-in through a real nginx running the shipped nginx.conf: what
//! clients get through it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::auth::helpers::{assert_unauthorized, SignIn, PASSWORD};
use crate::helpers::assert_problem;
use crate::proxy::{assert_security_headers, spawn_behind_nginx};

#[tokio::test]
async fn the_walkthrough_works_through_nginx() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;
    app.create_user("ada").await;

    let login = app.post_login("ada", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let header = login.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = header.strip_prefix("Bearer ").unwrap();
    let set = app
        .post_set_name(token, &json!({ "name": "Ada Lovelace" }))
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let got = app.get_name(token).await;
    assert_eq!(got.json::<Value>().await.unwrap()["name"], "Ada Lovelace");
    assert_eq!(
        app.post_logout(token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_unauthorized(app.get_name(token).await).await;
}

#[tokio::test]
async fn security_headers_are_on_a_401_too() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;

    let unauthorized = app.get("/getName").await;
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_security_headers(&unauthorized);
}

#[tokio::test]
async fn a_login_flood_gets_429_problem_documents() {
    let limits = [("NGINX_LOGIN_RATE", "1r/s"), ("NGINX_LOGIN_BURST", "5")];
    let proxied = spawn_behind_nginx(&limits).await;
    let app = &proxied.app;

    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let guess = json!({ "username": "nobody", "password": "guess" });
        attempts.spawn(app.client.post(app.url("/login")).json(&guess).send());
    }
    let answers: Vec<reqwest::Response> = attempts
        .join_all()
        .await
        .into_iter()
        .map(|answer| answer.unwrap())
        .collect();

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 10, "only {limited} of 20 limited: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 429 || *s == 401),
        "{statuses:?}"
    );
    let refused = answers.into_iter().find(|r| r.status() == 429).unwrap();
    assert_security_headers(&refused);
    assert_problem(refused, 429).await;
}

/// nginx's 429 on /login says when to try again, from the zone's rate (one
/// attempt a second here), and waiting that long is enough to get through.
#[tokio::test]
async fn a_login_429_from_nginx_says_when_to_retry_and_that_is_enough() {
    let limits = [("NGINX_LOGIN_RATE", "1r/s"), ("NGINX_LOGIN_BURST", "5")];
    let proxied = spawn_behind_nginx(&limits).await;
    let app = &proxied.app;
    // A name each: the service's own limit on one account's failures stays
    // out of the way.
    let attempt = |turn: usize| {
        let guess = json!({ "username": format!("nobody-{turn}"), "password": "guess" });
        app.client.post(app.url("/login")).json(&guess).send()
    };

    let mut attempts = tokio::task::JoinSet::new();
    for turn in 0..20 {
        attempts.spawn(attempt(turn));
    }
    let limited: Vec<reqwest::Response> = attempts
        .join_all()
        .await
        .into_iter()
        .map(|answer| answer.unwrap())
        .filter(|answer| answer.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(limited.len() >= 10, "only {} of 20 limited", limited.len());
    let mut waits = Vec::new();
    for refused in limited {
        let retry_after = refused.headers().get_all("retry-after");
        let values: Vec<&str> = retry_after.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(values, ["1"], "Retry-After of a 1r/s zone");
        waits.push(values[0].parse::<u64>().unwrap());
        assert_problem(refused, 429).await;
    }

    tokio::time::sleep(std::time::Duration::from_secs(waits[0])).await;
    let after_waiting = attempt(20).await.unwrap();
    assert_eq!(after_waiting.status(), StatusCode::UNAUTHORIZED);
}
