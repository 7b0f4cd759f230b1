use std::collections::HashSet;

use serde_json::Value;

use crate::auth::helpers::SignIn;
use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn search_matches_username_or_name_case_insensitively_with_public_fields_only() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_admin("searcher").await;
    app.create_user("alice").await;
    app.create_user("MALIKA").await;
    app.create_user("bob").await;
    let client = app.db.get().await.unwrap();
    client
        .execute(
            "UPDATE users SET name = 'Bob Ali Baba' WHERE username = 'bob'",
            &[],
        )
        .await
        .unwrap();

    let response = app.get_with_token("/v2/users?q=ALI", &token).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let usernames: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(usernames, ["alice", "bob", "MALIKA"]);
    for item in body["items"].as_array().unwrap() {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(keys, ["id", "name", "username"]);
    }
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn search_pages_with_a_cursor_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_admin("searcher").await;
    for i in 0..7 {
        app.create_user(&format!("member{i}")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v2/users?q=member&limit=3&cursor={c}"),
            None => "/v2/users?q=member&limit=3".to_owned(),
        };
        let page: Value = app
            .get_with_token(&path, &token)
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("member{i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
}

#[tokio::test]
async fn search_treats_like_wildcards_as_text() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_admin("searcher").await;
    app.create_user("alice").await;
    let body: Value = app
        .get_with_token("/v2/users?q=%25%25%25", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn search_parameters_outside_the_contract_are_400() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_admin("searcher").await;
    for path in [
        "/v2/users",
        "/v2/users?q=ab",
        "/v2/users?q=alice&limit=0",
        "/v2/users?q=alice&limit=101",
        "/v2/users?q=alice&limit=many",
    ] {
        assert_problem(app.get_with_token(path, &token).await, 400).await;
    }
}
