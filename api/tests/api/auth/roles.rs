//! Roles: deny by default. Every documented operation is walked with no
//! token, a bad token, a user's token and an admin's token.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::auth::helpers::{assert_unauthorized, SignIn, PASSWORD};
use crate::helpers::{assert_problem, spawn_app, TestApp};

/// Who may call an operation, as its OpenAPI security says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Anyone,
    SignedIn,
    Admin,
}

/// How to call each documented operation so that an allowed caller gets a
/// 2xx. A new operation fails the test until it is added here, with its
/// access stated: nothing is reachable by accident.
fn call_for(method: &str, path: &str, target: i64) -> Option<(Method, String, Option<Value>)> {
    let target_path = |template: &str| template.replace("{id}", &target.to_string());
    Some(match (method, path) {
        (
            "get",
            "/v1/hello" | "/v2/hello" | "/healthz" | "/readyz" | "/getName" | "/auth/verify",
        ) => (Method::GET, path.to_owned(), None),
        ("get", "/v2/users") => (Method::GET, "/v2/users?q=target".to_owned(), None),
        ("post", "/setName") => (
            Method::POST,
            path.to_owned(),
            Some(json!({ "name": "Matrix" })),
        ),
        ("post", "/logout") => (Method::POST, path.to_owned(), None),
        ("get", "/v2/sessions") => (Method::GET, path.to_owned(), None),
        ("post", "/v2/password") => (
            Method::POST,
            path.to_owned(),
            Some(json!({
                "current_password": PASSWORD,
                "new_password": "a new password",
            })),
        ),
        ("delete", "/v2/sessions") => (Method::DELETE, path.to_owned(), None),
        ("post", "/login") => (
            Method::POST,
            path.to_owned(),
            Some(json!({ "username": "target", "password": PASSWORD })),
        ),
        ("put", "/v2/users/{id}/role") => (
            Method::PUT,
            target_path(path),
            Some(json!({ "role": "user" })),
        ),
        ("delete", "/v2/users/{id}/sessions") => (Method::DELETE, target_path(path), None),
        _ => return None,
    })
}

async fn send(
    app: &TestApp,
    call: &(Method, String, Option<Value>),
    token: Option<&str>,
) -> reqwest::Response {
    let (method, path, body) = call;
    let mut request = app.client.request(method.clone(), app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_operation_answers_401_403_or_2xx_by_role() {
    let app = spawn_app().await;
    let target = app.create_user("target").await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();

    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let access = match operation["security"][0].as_object() {
                None => Access::Anyone,
                Some(scheme) if scheme.contains_key("AdminAuth") => Access::Admin,
                Some(scheme) if scheme.contains_key("BearerAuth") => Access::SignedIn,
                Some(other) => panic!("{method} {path}: unknown security {other:?}"),
            };
            let call = call_for(method, path, target)
                .unwrap_or_else(|| panic!("{method} {path} is not in the role matrix"));
            let what = format!("{method} {path} ({access:?})");
            // Fresh tokens each round: logout and role changes end sessions.
            let (_, user) = app
                .signed_in_user(&format!("u{}", uuid::Uuid::new_v4().simple())[..20])
                .await;
            let (_, admin) = app
                .signed_in_admin(&format!("a{}", uuid::Uuid::new_v4().simple())[..20])
                .await;
            let bad = uuid::Uuid::new_v4().to_string();

            let anonymous = send(&app, &call, None).await;
            let forged = send(&app, &call, Some(&bad)).await;
            if access == Access::Anyone {
                assert!(
                    anonymous.status().is_success(),
                    "{what}: {}",
                    anonymous.status()
                );
                continue;
            }
            assert_unauthorized(anonymous).await;
            assert_unauthorized(forged).await;
            let as_user = send(&app, &call, Some(&user)).await;
            match access {
                Access::Admin => {
                    assert_eq!(as_user.status(), StatusCode::FORBIDDEN, "{what} as a user");
                    assert_problem(as_user, 403).await;
                }
                _ => assert!(
                    as_user.status().is_success(),
                    "{what} as a user: {}",
                    as_user.status()
                ),
            }
            let as_admin = send(&app, &call, Some(&admin)).await;
            assert!(
                as_admin.status().is_success(),
                "{what} as an admin: {}",
                as_admin.status()
            );
        }
    }
}

#[tokio::test]
async fn a_role_change_ends_the_users_sessions_and_takes_effect() {
    let app = spawn_app().await;
    let (_, admin) = app.signed_in_admin("boss").await;
    let (carol, old_token) = app.signed_in_user("carol").await;
    let role = |role: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.client
                .put(app.url(&format!("/v2/users/{carol}/role")))
                .bearer_auth(admin)
                .json(&json!({ "role": role }))
                .send()
                .await
                .unwrap()
        }
    };

    let promoted = role("admin").await;
    assert_eq!(promoted.status(), StatusCode::OK);
    let body: Value = promoted.json().await.unwrap();
    assert_eq!(body["role"], "admin");
    assert_eq!(body["sessions_ended"], 1);
    assert_unauthorized(app.get_name(&old_token).await).await;
    let new_token = app.login("carol").await;
    let search = app.get_with_token("/v2/users?q=carol", &new_token).await;
    assert_eq!(search.status(), StatusCode::OK);

    assert_eq!(role("user").await.status(), StatusCode::OK);
    assert_unauthorized(app.get_with_token("/v2/users?q=carol", &new_token).await).await;
    let again = app.login("carol").await;
    let refused = app.get_with_token("/v2/users?q=carol", &again).await;
    assert_problem(refused, 403).await;
}

#[tokio::test]
async fn an_admin_can_end_all_of_a_users_sessions_and_only_theirs() {
    let app = spawn_app().await;
    let (_, admin) = app.signed_in_admin("boss").await;
    let (dave, laptop) = app.signed_in_user("dave").await;
    let phone = app.login("dave").await;
    let (_, erin) = app.signed_in_user("erin").await;

    let ended = app
        .client
        .delete(app.url(&format!("/v2/users/{dave}/sessions")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();

    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_unauthorized(app.get_name(&laptop).await).await;
    assert_unauthorized(app.get_name(&phone).await).await;
    assert_eq!(app.get_name(&erin).await.status(), StatusCode::OK);
    assert_eq!(app.get_name(&admin).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_users_and_unknown_roles_are_refused() {
    let app = spawn_app().await;
    let (_, admin) = app.signed_in_admin("boss").await;
    let (frank, _) = app.signed_in_user("frank").await;
    let put_role = |id: i64, body: Value| {
        app.client
            .put(app.url(&format!("/v2/users/{id}/role")))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };

    assert_problem(
        put_role(frank + 1000, json!({ "role": "user" }))
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(
        put_role(frank, json!({ "role": "root" })).await.unwrap(),
        400,
    )
    .await;
    let extra = json!({ "role": "user", "admin": true });
    assert_problem(put_role(frank, extra).await.unwrap(), 400).await;
    let no_one = app
        .client
        .delete(app.url(&format!("/v2/users/{}/sessions", frank + 1000)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(no_one, 404).await;
}

#[tokio::test]
async fn the_role_cannot_be_set_through_set_name() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("grace").await;

    let sneaky = app
        .post_set_name(&token, &json!({ "name": "Grace", "role": "admin" }))
        .await;

    assert_problem(sneaky, 400).await;
    let refused = app.get_with_token("/v2/users?q=grace", &token).await;
    assert_problem(refused, 403).await;
}

#[tokio::test]
async fn an_admin_cannot_change_their_own_role() {
    let app = spawn_app().await;
    let (boss, token) = app.signed_in_admin("boss").await;
    let response = app
        .client
        .put(app.url(&format!("/v2/users/{boss}/role")))
        .bearer_auth(&token)
        .json(&json!({ "role": "user" }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409).await;

    // Still an admin, still signed in.
    let search = app.get_with_token("/v2/users?q=boss", &token).await;
    assert_eq!(search.status(), 200);
}

/// Two admins demoting each other at once: one demotion is taken, the
/// other refused (409, or 403 once its sender is no admin), and the
/// service keeps an admin. The race is forced: a transaction of the test's
/// holds the admins' rows while both requests pass their checks and reach
/// the change, then lets them go together.
#[tokio::test]
async fn admins_demoting_each_other_at_once_always_leave_an_admin() {
    let app = spawn_app().await;
    let demote = |target: i64, token: String| {
        let request = app
            .client
            .put(app.url(&format!("/v2/users/{target}/role")))
            .bearer_auth(token)
            .json(&json!({ "role": "user" }));
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    let mut client = app.db.get().await.unwrap();
    for round in 0..3 {
        let (ann, ann_token) = app.signed_in_admin(&format!("ann{round}")).await;
        let (ben, ben_token) = app.signed_in_admin(&format!("ben{round}")).await;

        let hold = client.transaction().await.unwrap();
        hold.execute("SELECT id FROM users WHERE role = 'admin' FOR UPDATE", &[])
            .await
            .unwrap();
        let by_ann = demote(ben, ann_token);
        let by_ben = demote(ann, ben_token);
        // Both are past their admin check, waiting on the rows.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        hold.commit().await.unwrap();
        let (by_ann, by_ben) = (by_ann.await.unwrap(), by_ben.await.unwrap());

        let admins: i64 = client
            .query_one("SELECT count(*) FROM users WHERE role = 'admin'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(admins, 1, "round {round}: {by_ann} and {by_ben}");
        let mut statuses = [by_ann.as_u16(), by_ben.as_u16()];
        statuses.sort();
        assert!(
            statuses == [200, 403] || statuses == [200, 409],
            "round {round}: {statuses:?}"
        );
        // The next round starts with no admin.
        client
            .execute("DELETE FROM users WHERE role = 'admin'", &[])
            .await
            .unwrap();
    }
}
