//! The signed-in user's own account: `GET /getName` and `POST /setName`
//! (the display name), `POST /v2/password`.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::login::BearerAuth;
use super::text::{NotBlank, Text};
use super::{on_constraint, to_the_end, unauthenticated, AuthTags};
use crate::error::ApiError;
use crate::modules::auth::domain::{DisplayName, NewPassword};
use crate::modules::auth::throttle::{Account, LoginError};
use crate::modules::auth::{users, AuthState};

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SetNameRequest {
    /// 1 to 100 characters, at least one of them not whitespace, none a
    /// control character; stored trimmed. It must also show, or it is
    /// refused with 422: none of Unicode's default-ignorable (invisible or
    /// text-direction) characters, nor U+2028 or U+2029, but for the
    /// joiners, variation selectors and tags emoji are built with, each
    /// attached to a visible character before it.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: Text<NotBlank>,
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

pub struct Api;

#[OpenApi(tag = "AuthTags::Profile")]
impl Api {
    /// Get my name
    #[oai(path = "/getName", method = "get")]
    async fn get_name(
        &self,
        state: Data<&AuthState>,
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
                .ok_or_else(unauthenticated)?
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
        state: Data<&AuthState>,
        auth: BearerAuth,
        body: Json<SetNameRequest>,
    ) -> Result<Json<NameResponse>, ApiError> {
        let name = DisplayName::parse(body.0.name.as_str())?;
        let stored = {
            let client = state.db.get().await?;
            users::set_name(&client, auth.0.user_id, name.as_str())
                .await
                .map_err(on_constraint)?
                .ok_or_else(unauthenticated)?
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
        state: Data<&AuthState>,
        auth: BearerAuth,
        body: Json<ChangePasswordRequest>,
    ) -> Result<PasswordChanged, ApiError> {
        let current = body.0.current_password.into_string();
        let new = body.0.new_password.into_string();
        let user_id = auth.0.user_id;
        let stored = {
            let client = state.db.get().await?;
            users::get_password_hash(&client, user_id)
                .await?
                .ok_or_else(unauthenticated)?
        };
        let new = NewPassword::parse(new)?;
        let check = async {
            let verified = state.passwords.verify(current, Some(stored)).await?;
            Ok::<_, LoginError>(verified.then_some(()))
        };
        match state
            .throttle
            .password_check(Account::User(user_id), check)
            .await
        {
            Ok(()) => {}
            Err(LoginError::InvalidCredentials) => {
                return Err(ApiError::Forbidden("the current password is wrong"))
            }
            Err(other) => return Err(other.into()),
        }
        let hash = state.passwords.hash(new.into_inner()).await?;
        let state = state.0.clone();
        let ended = to_the_end(async move {
            let epoch = {
                let mut client = state.db.get().await?;
                users::set_password_hash(&mut client, user_id, &hash)
                    .await?
                    .ok_or_else(unauthenticated)?
            };
            Ok(state.sessions.end_all(user_id, epoch).await?)
        })
        .await?;
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
    use crate::modules::auth::domain::broken_promise;

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
                if let Ok(name) = DisplayName::parse(request.name.as_str()) {
                    prop_assert_eq!(broken_promise(name.as_str()), None, "{:?}", name);
                }
            }
        }

    }
}
