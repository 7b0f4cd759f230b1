//! Credential epochs: a password or role change, or sessions ended, ends
//! every session of the user, those of logins still in flight when it
//! happened included.

use std::time::Duration;

use app::modules::auth::users;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::auth::helpers::{assert_unauthorized, SignIn, PASSWORD};
use crate::helpers::{spawn_app, spawn_app_with, Servers, TestApp};

const NEW_PASSWORD: &str = "a much better password";

/// What ends every session of a user.
#[derive(Debug, Clone, Copy)]
enum Ending {
    PasswordChange,
    RoleChange,
    AdminEndsSessions,
    LogoutEverywhere,
}

impl Ending {
    const ALL: [Ending; 4] = [
        Ending::PasswordChange,
        Ending::RoleChange,
        Ending::AdminEndsSessions,
        Ending::LogoutEverywhere,
    ];

    /// Does it to `user` (whose `token` it is), as they or `admin` would.
    async fn apply(self, app: &TestApp, user: i64, token: &str, admin: &str) -> Response {
        let request = match self {
            Ending::PasswordChange => app
                .client
                .post(app.url("/v2/password"))
                .bearer_auth(token)
                .json(&json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD })),
            Ending::RoleChange => app
                .client
                .put(app.url(&format!("/v2/users/{user}/role")))
                .bearer_auth(admin)
                .json(&json!({ "role": "admin" })),
            Ending::AdminEndsSessions => app
                .client
                .delete(app.url(&format!("/v2/users/{user}/sessions")))
                .bearer_auth(admin),
            Ending::LogoutEverywhere => app
                .client
                .delete(app.url("/v2/sessions"))
                .bearer_auth(token),
        };
        request.send().await.unwrap()
    }

    /// The password the user has afterwards.
    fn password_after(self) -> &'static str {
        match self {
            Ending::PasswordChange => NEW_PASSWORD,
            _ => PASSWORD,
        }
    }
}

/// The user's credential epoch, read as a login reads it.
async fn epoch_of(app: &TestApp, username: &str) -> i64 {
    let client = app.db.get().await.unwrap();
    users::find_credentials(&client, username)
        .await
        .unwrap()
        .unwrap()
        .epoch
}

/// A login that read the credentials just before the change, and gets to
/// start its session just after it, gets none: whichever the change.
#[tokio::test]
async fn a_login_that_read_the_credentials_before_a_change_gets_no_session() {
    let app = spawn_app().await;
    let (_, admin) = app.signed_in_admin("boss").await;
    for (n, ending) in Ending::ALL.into_iter().enumerate() {
        let username = format!("user{n}");
        let (user, token) = app.signed_in_user(&username).await;
        let before = epoch_of(&app, &username).await;

        let ended = ending.apply(&app, user, &token, &admin).await;
        assert!(
            ended.status().is_success(),
            "{ending:?}: {}",
            ended.status()
        );

        let late = app
            .auth()
            .sessions
            .create(user, before, None)
            .await
            .unwrap();
        assert!(
            late.is_none(),
            "{ending:?}: a session of the old epoch began"
        );
        assert_unauthorized(app.get_name(&token).await).await;
        // A login after the change carries the new epoch and works.
        let again = app.post_login(&username, ending.password_after()).await;
        assert_eq!(again.status(), StatusCode::OK, "{ending:?}");
        let token: Value = again.json().await.unwrap();
        let token = token["token"].as_str().unwrap();
        assert_eq!(app.get_name(token).await.status(), StatusCode::OK);
    }
}

/// Each session is checked against the user's current epoch on every use:
/// should Redis have missed a change (it failed after the commit, and the
/// caller got a 503), the next login carries the new epoch there and the
/// older sessions end then.
#[tokio::test]
async fn a_session_of_an_older_epoch_is_refused_once_redis_learns_the_new_one() {
    let app = spawn_app().await;
    let (user, token) = app.signed_in_user("alice").await;
    let before = epoch_of(&app, "alice").await;
    let changed = Ending::PasswordChange.apply(&app, user, &token, "").await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    // Redis forgets the change, as if it had failed to hear of it.
    let key = format!("{}credential-epoch:{user}", app.settings.redis.key_prefix);
    let mut redis = app.redis.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let stale = app
        .auth()
        .sessions
        .create(user, before, None)
        .await
        .unwrap();
    let stale = stale.expect("Redis knows no newer epoch").token.to_string();
    assert_eq!(app.get_name(&stale).await.status(), StatusCode::OK);

    let fresh = app.post_login("alice", NEW_PASSWORD).await;
    assert_eq!(fresh.status(), StatusCode::OK);

    assert_unauthorized(app.get_name(&stale).await).await;
}

/// The race as a client meets it: logins with the old password run while
/// the password changes. Some pass the old hash before the change and make
/// their session after it ended the others; none may work afterwards.
#[tokio::test]
async fn logins_in_flight_during_a_password_change_do_not_outlive_it() {
    // Enough failures allowed that the throttle refuses none of the logins.
    let app = spawn_app_with(&Servers::shared(), &["--login-max-failures", "1000"]).await;
    let (_, token) = app.signed_in_user("alice").await;
    let login = || {
        let request = app
            .client
            .post(app.url("/login"))
            .json(&json!({ "username": "alice", "password": PASSWORD }));
        async move { request.send().await.unwrap() }
    };
    // Logins before the change, and more while it runs: those whose hash
    // check waits behind the change's own are the ones the race is about.
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..8 {
        logins.spawn(login());
    }
    let change = app
        .client
        .post(app.url("/v2/password"))
        .bearer_auth(&token)
        .json(&json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }));
    let change = tokio::spawn(async move { change.send().await.unwrap().status() });
    for _ in 0..16 {
        logins.spawn(login());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(change.await.unwrap(), StatusCode::NO_CONTENT);

    let mut issued = Vec::new();
    while let Some(login) = logins.join_next().await {
        let login = login.unwrap();
        if login.status() == StatusCode::OK {
            let body: Value = login.json().await.unwrap();
            issued.push(body["token"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
        }
    }
    // The logins sent before the change had the old password right.
    assert!(!issued.is_empty(), "no login got a session at all");
    for token in &issued {
        assert_unauthorized(app.get_name(token).await).await;
    }
}
