//! Sign-in's part of the harness: users with a known password, logins and
//! tokens, on the core's [`TestApp`] and [`Served`] through extension traits,
//! so the core's helpers never name sign-in.

use std::sync::OnceLock;

use app::modules::auth::users::{self, NewUser};
use app::modules::auth::{passwords, sessions, AuthState};
use app::storage::postgres;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, one_connection, TestApp};
use crate::serving::Served;

/// The password every user made by [`SignIn::create_user`] has.
pub const PASSWORD: &str = "correct horse battery staple";

/// The argon2 hash of [`PASSWORD`], computed once per test binary.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| passwords::hash_blocking(PASSWORD).unwrap())
}

/// Inserts a user with [`PASSWORD`] and returns their id.
async fn insert_user(client: &mut deadpool_postgres::Client, username: &str, admin: bool) -> i64 {
    let user = NewUser {
        username,
        name: username,
        password_hash: password_hash(),
        admin,
    };
    users::create(client, &user).await.unwrap()
}

/// Signing in to a [`TestApp`].
pub trait SignIn {
    /// Sign-in's state as the app installed it: the same sessions, throttle,
    /// names cache and password hasher its handlers use.
    fn auth(&self) -> &AuthState;

    /// Inserts a user with [`PASSWORD`] and returns their id.
    async fn create_user(&self, username: &str) -> i64;

    /// Inserts an admin with [`PASSWORD`] and returns their id.
    async fn create_admin(&self, username: &str) -> i64;

    async fn get_with_token(&self, path: &str, token: &str) -> Response;

    async fn post_login(&self, username: &str, password: &str) -> Response;

    /// Logs in with [`PASSWORD`] and returns the token.
    async fn login(&self, username: &str) -> String;

    /// A new user, logged in: (id, token).
    async fn signed_in_user(&self, username: &str) -> (i64, String);

    /// A new admin, logged in: (id, token).
    async fn signed_in_admin(&self, username: &str) -> (i64, String);

    async fn get_name(&self, token: &str) -> Response;

    async fn post_set_name(&self, token: &str, body: &Value) -> Response;

    async fn post_logout(&self, token: &str) -> Response;

    /// Seconds the token's session key has left in Redis.
    async fn session_key_ttl(&self, token: &str) -> i64;
}

impl SignIn for TestApp {
    fn auth(&self) -> &AuthState {
        self.shared
            .get::<AuthState>()
            .expect("the sign-in module is installed")
    }

    async fn create_user(&self, username: &str) -> i64 {
        let mut client = self.db.get().await.unwrap();
        insert_user(&mut client, username, false).await
    }

    async fn create_admin(&self, username: &str) -> i64 {
        let mut client = self.db.get().await.unwrap();
        insert_user(&mut client, username, true).await
    }

    async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn post_login(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, username: &str) -> String {
        let response = self.post_login(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login as {username}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    async fn signed_in_user(&self, username: &str) -> (i64, String) {
        let id = self.create_user(username).await;
        (id, self.login(username).await)
    }

    async fn signed_in_admin(&self, username: &str) -> (i64, String) {
        let id = self.create_admin(username).await;
        (id, self.login(username).await)
    }

    async fn get_name(&self, token: &str) -> Response {
        self.get_with_token("/getName", token).await
    }

    async fn post_set_name(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/setName"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_logout(&self, token: &str) -> Response {
        self.client
            .post(self.url("/logout"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn session_key_ttl(&self, token: &str) -> i64 {
        let mut redis = self.redis.get_multiplexed_async_connection().await.unwrap();
        let token = uuid::Uuid::parse_str(token).unwrap();
        let key = format!(
            "{}session:{}",
            self.settings.redis.key_prefix,
            sessions::digest(token)
        );
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap()
    }
}

/// Users in a [`Served`] service's database.
pub trait ServedSignIn {
    /// Adds a user with [`PASSWORD`] to the service's database.
    async fn create_user(&self, username: &str);
}

impl ServedSignIn for Served {
    async fn create_user(&self, username: &str) {
        let settings = one_connection(&self.database_url);
        let mut client = postgres::pool(&settings).unwrap().get().await.unwrap();
        insert_user(&mut client, username, false).await;
    }
}

/// Asserts a 401 problem that tells the client to use a bearer token.
pub async fn assert_unauthorized(response: Response) {
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..]),
        "WWW-Authenticate on {}",
        response.url()
    );
    assert_problem(response, 401).await;
}
