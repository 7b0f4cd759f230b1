//! What sign-in's endpoints make of input built to be read two ways: JSON
//! that names a key twice.

use reqwest::Response;
use serde_json::{json, Value};

use crate::auth::helpers::{SignIn, PASSWORD};
use crate::helpers::{assert_problem, TestApp};

async fn post_raw(app: &TestApp, path: &str, token: Option<&str>, body: String) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json; charset=utf-8")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A 400 problem document whose detail names `key`.
async fn assert_names_twice(response: Response, key: &str) {
    let problem = assert_problem(response, 400).await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("\"{key}\"")), "{problem}");
}

/// The last of two equal keys is the one serde_json keeps: each body here
/// would log alice in if it were read that way.
#[tokio::test]
async fn a_login_body_naming_a_key_twice_is_a_400_problem() {
    let app = crate::helpers::spawn_app().await;
    app.create_user("alice").await;
    let cases = [
        (
            "password",
            format!(r#"{{"username":"alice","password":"wrong","password":"{PASSWORD}"}}"#),
        ),
        (
            "username",
            format!(r#"{{"username":"nobody","username":"alice","password":"{PASSWORD}"}}"#),
        ),
        // One key, spelt two ways.
        (
            "password",
            format!(r#"{{"username":"alice","passwor\u0064":"wrong","password":"{PASSWORD}"}}"#),
        ),
    ];
    for (key, body) in cases {
        assert_names_twice(post_raw(&app, "/login", None, body).await, key).await;
    }
    // The same keys once each: alice logs in.
    let once = json!({ "username": "alice", "password": PASSWORD }).to_string();
    assert_eq!(post_raw(&app, "/login", None, once).await.status(), 200);
}

#[tokio::test]
async fn a_set_name_body_naming_the_name_twice_is_400_and_changes_nothing() {
    let app = crate::helpers::spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;

    let twice = r#"{"name":"Ada","name":"Eve"}"#.to_owned();
    assert_names_twice(
        post_raw(&app, "/setName", Some(&token), twice).await,
        "name",
    )
    .await;

    let stored: Value = app.get_name(&token).await.json().await.unwrap();
    assert_eq!(stored, json!({ "name": "alice" }));
}
