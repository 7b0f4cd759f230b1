use crate::helpers::{assert_unauthorized, spawn_app, spawn_app_with, Servers};

#[tokio::test]
async fn logout_kills_that_token_at_once_and_only_that_one() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;
    let other = app.login("alice").await;

    let response = app.post_logout(&token).await;

    assert_eq!(response.status(), 204);
    assert_unauthorized(app.get_name(&token).await).await;
    assert_unauthorized(app.post_logout(&token).await).await;
    assert_eq!(app.get_name(&other).await.status(), 200);
}

#[tokio::test]
async fn protected_endpoints_refuse_missing_malformed_and_unknown_tokens() {
    let app = spawn_app().await;
    for path in ["/getName", "/v2/users?q=alice"] {
        assert_unauthorized(app.get(path).await).await;
        assert_unauthorized(app.get_with_token(path, "not-a-uuid").await).await;
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_unauthorized(app.get_with_token(path, &unknown).await).await;
        let basic = app
            .client
            .get(app.url(path))
            .basic_auth("alice", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_unauthorized(basic).await;
    }
    assert_unauthorized(app.post_logout("not-a-uuid").await).await;
    let set_name = app
        .client
        .post(app.url("/setName"))
        .json(&serde_json::json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_unauthorized(set_name).await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = spawn_app_with(&Servers::shared(), &["--session-ttl-seconds=1"]).await;
    let (_, token) = app.signed_in_user("alice").await;
    assert_eq!(app.get_name(&token).await.status(), 200);

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    assert_unauthorized(app.get_name(&token).await).await;
}

#[tokio::test]
async fn a_session_whose_user_was_deleted_is_refused() {
    let app = spawn_app().await;
    let (id, token) = app.signed_in_user("alice").await;
    let client = app.db.get().await.unwrap();
    client
        .execute("DELETE FROM users WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_unauthorized(app.get_name(&token).await).await;
}
