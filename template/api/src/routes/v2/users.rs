//! The v2 user search: public fields only, keyset-paginated by username.

use poem_openapi::Object;

use crate::db::users;
use crate::error::ApiError;
use crate::state::AppState;

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

pub fn default_limit() -> u32 {
    20
}

pub async fn search(
    state: &AppState,
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
