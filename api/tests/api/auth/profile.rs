use serde_json::{json, Value};

use crate::auth::helpers::{assert_unauthorized, SignIn, PASSWORD};
use crate::helpers::{assert_problem, spawn_app, TestApp};

#[tokio::test]
async fn get_name_starts_as_the_username() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;
    let response = app.get_name(&token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "name": "alice" })
    );
}

#[tokio::test]
async fn set_name_stores_the_trimmed_name_and_get_name_reads_it_back() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;

    let response = app
        .post_set_name(&token, &json!({ "name": "  Ada Lovelace  " }))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "name": "Ada Lovelace" })
    );
    let stored: Value = app.get_name(&token).await.json().await.unwrap();
    assert_eq!(stored, json!({ "name": "Ada Lovelace" }));
}

#[tokio::test]
async fn names_are_one_to_a_hundred_characters_not_bytes() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;
    let hundred_wide = "é".repeat(100);
    let response = app
        .post_set_name(&token, &json!({ "name": hundred_wide }))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn names_outside_the_documented_pattern_are_400_and_leave_the_name_alone() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;
    for bad in [
        "",
        "   ",
        "a\u{0}b",
        "line\nbreak",
        "bell\u{7}",
        &"x".repeat(101),
    ] {
        let response = app.post_set_name(&token, &json!({ "name": bad })).await;
        assert_problem(response, 400).await;
    }
    let stored: Value = app.get_name(&token).await.json().await.unwrap();
    assert_eq!(stored, json!({ "name": "alice" }));
}

#[tokio::test]
async fn set_name_bodies_that_are_not_the_contract_are_400() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;
    for body in [
        json!({}),
        json!({ "name": 7 }),
        json!({ "name": "x", "role": "admin" }),
    ] {
        assert_problem(app.post_set_name(&token, &body).await, 400).await;
    }
}

#[tokio::test]
async fn each_user_sees_only_their_own_name() {
    let app = spawn_app().await;
    let (_, alice) = app.signed_in_user("alice").await;
    let (_, bob) = app.signed_in_user("bob").await;
    app.post_set_name(&alice, &json!({ "name": "Alice A." }))
        .await;
    let bobs: Value = app.get_name(&bob).await.json().await.unwrap();
    assert_eq!(bobs["name"], "bob");
}

#[tokio::test]
async fn concurrent_set_names_each_store_their_own_value_and_leave_the_row_consistent() {
    let app = spawn_app().await;
    let (id, token) = app.signed_in_user("alice").await;
    let names: Vec<String> = (0..20).map(|i| format!("Writer {i}")).collect();

    let mut writers = tokio::task::JoinSet::new();
    for name in names.clone() {
        let request = app
            .client
            .post(app.url("/setName"))
            .bearer_auth(&token)
            .json(&json!({ "name": name }));
        writers.spawn(async move { (name, request.send().await.unwrap()) });
    }
    // Each write is one atomic UPDATE ... RETURNING: each writer sees its
    // own value stored, none another's.
    for (name, response) in writers.join_all().await {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["name"], name.as_str());
    }

    let last: Value = app.get_name(&token).await.json().await.unwrap();
    let last = last["name"].as_str().unwrap().to_owned();
    assert!(names.contains(&last), "{last}");
    let client = app.db.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT name, updated_at >= created_at FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), last);
    assert!(row.get::<_, bool>(1));
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/v2/password"))
        .bearer_auth(token)
        .json(&json!({ "current_password": current, "new_password": new }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_change_ends_every_session_and_only_the_new_password_works() {
    let app = spawn_app().await;
    let (_, laptop) = app.signed_in_user("alice").await;
    let phone = app.login("alice").await;

    let changed = change_password(&app, &phone, PASSWORD, "a much better password").await;

    assert_eq!(changed.status(), 204);
    assert_unauthorized(app.get_name(&laptop).await).await;
    assert_unauthorized(app.get_name(&phone).await).await;
    assert_eq!(app.post_login("alice", PASSWORD).await.status(), 401);
    let again = app.post_login("alice", "a much better password").await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;

    let refused = change_password(&app, &token, "not my password", "a much better password").await;

    assert_problem(refused, 403).await;
    assert_eq!(app.get_name(&token).await.status(), 200);
    assert_eq!(app.post_login("alice", PASSWORD).await.status(), 200);
    let short = change_password(&app, &token, PASSWORD, "short").await;
    assert_problem(short, 400).await;
}
