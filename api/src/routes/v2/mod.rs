//! Version 2: a structured hello, and the user search.

mod users;

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::AdminAuth;
use super::ApiTags;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Object)]
#[oai(rename = "GreetingV2")]
pub struct Greeting {
    pub text: String,
    /// BCP 47 language tag of `text`.
    pub language: String,
}

#[derive(Debug, Object)]
#[oai(rename = "HelloV2")]
pub struct Hello {
    /// Always `v2`.
    pub version: String,
    pub greeting: Greeting,
}

pub struct Api;

#[OpenApi(prefix_path = "/v2", tag = "ApiTags::V2")]
impl Api {
    /// Hello, v2
    ///
    /// Greets `name` when given.
    #[oai(path = "/hello", method = "get")]
    async fn hello(
        &self,
        /// Who to greet.
        #[oai(validator(min_length = 1, max_length = 100))]
        name: Query<Option<String>>,
    ) -> Result<Json<Hello>, ApiError> {
        let who = name.0.as_deref().unwrap_or("world");
        Ok(Json(Hello {
            version: "v2".into(),
            greeting: Greeting {
                text: format!("Hello, {who}!"),
                language: "en".into(),
            },
        }))
    }

    /// Search users
    ///
    /// Users whose username or name contains `q` (case-insensitive), in
    /// username order. Pass `next_cursor` back as `cursor` for the next page.
    #[oai(path = "/users", method = "get")]
    async fn search_users(
        &self,
        state: Data<&AppState>,
        _admin: AdminAuth,
        /// Text to look for; at least 3 characters (trigram search).
        #[oai(validator(min_length = 3, max_length = 100, pattern = r"^[^\x00-\x1F\x7F]*$"))]
        q: Query<String>,
        /// Page size, 1 to 100.
        #[oai(
            default = "users::default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 64, pattern = r"^[^\x00-\x1F\x7F]*$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<users::UserPage>, ApiError> {
        users::search(&state, &q.0, limit.0, cursor.0.as_deref())
            .await
            .map(Json)
    }
}
