//! What sign-in's endpoints and commands make of input built to be read
//! two ways: JSON that names a key twice, and display names that show
//! nothing or show otherwise than they are stored.

use reqwest::Response;
use serde_json::{json, Value};

use crate::auth::helpers::{SignIn, PASSWORD};
use crate::cli::{cli, text};
use crate::helpers::{assert_problem, spawn_app, TestApp};

/// Names that pass the schema's pattern (no control character, one that is
/// not whitespace) and that no one could read: blank to the eye, reversed
/// to the eye, or broken over two lines.
const INVISIBLE_NAMES: [&str; 5] = [
    "\u{200B}\u{200B}",
    "abc\u{202E}gpj.exe",
    "\u{200D}",
    "\u{2066}Ada\u{2069}",
    "Ada\u{2028}Lovelace",
];

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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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

/// The domain's refusal, like its other name errors (422, as the OpenAPI
/// document says setName answers), and the stored name unchanged.
#[tokio::test]
async fn set_name_refuses_names_that_do_not_show_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;

    for name in INVISIBLE_NAMES {
        let response = app.post_set_name(&token, &json!({ "name": name })).await;
        let problem = assert_problem(response, 422).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("visible"),
            "{name:?}: {problem}"
        );
    }

    let stored: Value = app.get_name(&token).await.json().await.unwrap();
    assert_eq!(stored, json!({ "name": "alice" }));
    // An emoji's joiners are not refused.
    let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
    let response = app.post_set_name(&token, &json!({ "name": family })).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "name": family })
    );
}

#[tokio::test]
async fn users_add_refuses_names_that_do_not_show() {
    let app = spawn_app().await;
    let url = &app.settings.database.url;

    for name in INVISIBLE_NAMES {
        let out = cli(
            &["users", "add", "grace", "--name", name],
            &[("DATABASE_URL", url)],
            "long-enough-pw\n",
        );
        assert!(!out.status.success(), "{name:?} was taken");
        assert!(
            text(&out.stderr).contains("name must be visible"),
            "{name:?}: {}",
            text(&out.stderr)
        );
    }
    let client = app.db.get().await.unwrap();
    let users = client
        .query_one("SELECT count(*) FROM users WHERE username = 'grace'", &[])
        .await
        .unwrap();
    assert_eq!(users.get::<_, i64>(0), 0);
}
