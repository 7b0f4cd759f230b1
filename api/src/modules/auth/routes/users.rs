//! The user search (`GET /v2/users`, admins only): public fields only,
//! keyset-paginated by username.

use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::login::AdminAuth;
use super::text::{NoControl, Text};
use super::AuthTags;
use crate::error::ApiError;
use crate::modules::auth::{users, AuthState};

#[derive(Debug, Object)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
    pub name: String,
}

#[derive(Debug, Object)]
pub struct UserPage {
    pub items: Vec<UserSummary>,
    /// Present when more results follow.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

fn default_limit() -> u32 {
    20
}

async fn search(
    state: &AuthState,
    query: &str,
    limit: u32,
    cursor: Option<&str>,
) -> Result<UserPage, ApiError> {
    let client = state.db.get().await?;
    // One extra row tells whether another page exists without a COUNT.
    let mut found = users::search(&client, query.trim(), cursor, i64::from(limit) + 1).await?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next_cursor = more
        .then(|| found.last().map(|last| last.username.to_lowercase()))
        .flatten();
    Ok(UserPage {
        items: found
            .into_iter()
            .map(|user| UserSummary {
                id: user.id,
                username: user.username,
                name: user.name,
            })
            .collect(),
        next_cursor,
    })
}

pub struct Api;

#[OpenApi(prefix_path = "/v2", tag = "AuthTags::Admin")]
impl Api {
    /// Search users
    ///
    /// Users whose username or name contains `q` (case-insensitive), in
    /// username order. Pass `next_cursor` back as `cursor` for the next page.
    #[oai(path = "/users", method = "get")]
    async fn search_users(
        &self,
        state: Data<&AuthState>,
        _admin: AdminAuth,
        /// Text to look for; at least 3 characters (trigram search).
        #[oai(validator(min_length = 3, max_length = 100))]
        q: Query<Text<NoControl>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 64))]
        cursor: Query<Option<Text<NoControl>>>,
    ) -> Result<Json<UserPage>, ApiError> {
        let cursor = cursor.0.as_ref().map(Text::as_str);
        search(&state, q.0.as_str(), limit.0, cursor)
            .await
            .map(Json)
    }
}
