//! The signed-in user's own account: `GET /getName` and `POST /setName`
//! (the display name), `POST /v2/password`.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::BearerAuth;
use super::text::Text;
use super::ApiTags;
use crate::db::users;
use crate::error::ApiError;
use crate::state::AppState;

pub const NAME_MAX_CHARS: usize = 100;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SetNameRequest {
    /// 1 to 100 characters, at least one of them not whitespace, none a
    /// control character; stored trimmed.
    #[oai(validator(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    ))]
    pub name: Text,
}

#[derive(Debug, Object)]
pub struct NameResponse {
    pub name: String,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub current_password: Text,
    /// 8 to 1024 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub new_password: Text,
}

#[derive(ApiResponse)]
pub enum PasswordChanged {
    /// Changed. Every session of the user has ended, this one included:
    /// log in again with the new password.
    #[oai(status = 204)]
    Changed,
}

/// Trims `raw` and checks it against the name rules.
pub fn normalize_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ApiError::Validation("name must not be empty".into()));
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(ApiError::Validation(format!(
            "name must be at most {NAME_MAX_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::Validation(
            "name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

pub struct Api;

#[OpenApi(tag = "ApiTags::Profile")]
impl Api {
    /// Get my name
    #[oai(path = "/getName", method = "get")]
    async fn get_name(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
    ) -> Result<Json<NameResponse>, ApiError> {
        let user_id = auth.0.user_id;
        // Read with the session, in the same round trip to Redis.
        if let Some(name) = auth.0.cached_name {
            return Ok(Json(NameResponse { name }));
        }
        // The lease before the read: a change committed after it revokes it.
        let lease = state.names.lease(user_id).await?;
        let stored = {
            let client = state.db.get().await?;
            // A session whose user was deleted is no session at all.
            users::get_name(&client, user_id)
                .await?
                .ok_or(ApiError::Unauthenticated)?
        };
        if let Some(lease) = lease {
            state
                .names
                .fill(lease, &stored.name, stored.version)
                .await?;
        }
        Ok(Json(NameResponse { name: stored.name }))
    }

    /// Set my name
    ///
    /// Answers with the name as stored (trimmed).
    #[oai(path = "/setName", method = "post")]
    async fn set_name(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<SetNameRequest>,
    ) -> Result<Json<NameResponse>, ApiError> {
        let name = normalize_name(&body.0.name.0)?;
        let stored = {
            let mut client = state.db.get().await?;
            users::set_name(&mut client, auth.0.user_id, &name)
                .await?
                .ok_or(ApiError::Unauthenticated)?
        };
        // Answered only once the cache cannot give the name this replaced.
        state
            .names
            .changed(auth.0.user_id, &stored.name, stored.version)
            .await?;
        Ok(Json(NameResponse { name: stored.name }))
    }

    /// Change my password
    ///
    /// Needs the current password; a wrong one counts as a failed login.
    /// Ends all of the user's sessions, so a stolen token dies with the old
    /// password.
    #[oai(path = "/v2/password", method = "post")]
    async fn change_password(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<ChangePasswordRequest>,
    ) -> Result<PasswordChanged, ApiError> {
        let ChangePasswordRequest {
            current_password: Text(current),
            new_password: Text(new),
        } = body.0;
        let user_id = auth.0.user_id;
        let (username, stored) = {
            let client = state.db.get().await?;
            users::get_credentials_by_id(&client, user_id)
                .await?
                .ok_or(ApiError::Unauthenticated)?
        };
        let check = async {
            let verified = state.passwords.verify(current, Some(stored)).await?;
            Ok(verified.then_some(()))
        };
        state
            .limiter
            .password_check(&username, check)
            .await?
            .ok_or(ApiError::WrongPassword)?;
        let hash = state.passwords.hash(new).await?;
        {
            let client = state.db.get().await?;
            if !users::set_password_hash(&client, user_id, &hash).await? {
                return Err(ApiError::Unauthenticated);
            }
        }
        let ended = state.sessions.revoke_all(user_id).await?;
        tracing::info!(user_id, ended, "password changed; sessions ended");
        Ok(PasswordChanged::Changed)
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ParseFromJSON;
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Any JSON value at all.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::hash_map(".{0,8}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Hostile bodies are refused or accepted, never a panic; and a name
        /// that gets through is one the rules allow.
        #[test]
        fn any_json_body_parses_or_is_refused_and_accepted_names_obey_the_rules(body in json()) {
            if let Ok(request) = SetNameRequest::parse_from_json(Some(body)) {
                if let Ok(name) = normalize_name(&request.name.0) {
                    let chars = name.chars().count();
                    prop_assert!((1..=NAME_MAX_CHARS).contains(&chars));
                    prop_assert!(!name.chars().any(char::is_control));
                    prop_assert_eq!(name.trim(), name.as_str());
                }
            }
        }

        #[test]
        fn normalize_name_never_panics_and_keeps_its_promises(raw in "\\PC{0,120}|.{0,120}") {
            if let Ok(name) = normalize_name(&raw) {
                prop_assert!((1..=NAME_MAX_CHARS).contains(&name.chars().count()));
                prop_assert!(!name.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(normalize_name("  Ada Lovelace \n").unwrap(), "Ada Lovelace");
        assert_eq!(
            normalize_name(&"é".repeat(100)).unwrap().chars().count(),
            100
        );
        for bad in ["", "   ", "a\u{0}b", "tab\there", "del\u{7f}", "c1\u{85}x"] {
            assert!(normalize_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(normalize_name(&"x".repeat(101)).is_err());
    }
}
