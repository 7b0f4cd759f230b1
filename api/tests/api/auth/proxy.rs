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
