//! What only admins may do: change a user's role, end a user's sessions.
//! (The user search, in `users.rs`, is admin-only too.) Every operation takes
//! [`AdminAuth`]: no token gets 401, a user's token 403.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::login::AdminAuth;
use super::{to_the_end, AuthTags};
use crate::error::ApiError;
use crate::modules::auth::events::Event;
use crate::modules::auth::users::{self, RoleChange};
use crate::modules::auth::AuthState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    /// As stored in `users.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: Role,
}

#[derive(Debug, Object)]
pub struct RoleChanged {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// How many of the user's sessions the change ended.
    pub sessions_ended: u64,
}

#[derive(ApiResponse)]
pub enum SessionsEnded {
    /// Every session of the user has ended.
    #[oai(status = 204)]
    Ended,
}

pub struct Api;

#[OpenApi(prefix_path = "/v2", tag = "AuthTags::Admin")]
impl Api {
    /// Change a user's role
    ///
    /// Ends all of the user's sessions, so that they sign in again under
    /// the new role. Not one's own (409): an admin cannot lock themselves
    /// out by mistake. Nor the last admin's (409), however many admins
    /// demote each other at once: the service always keeps one.
    #[oai(path = "/users/:id/role", method = "put")]
    async fn set_role(
        &self,
        state: Data<&AuthState>,
        admin: AdminAuth,
        /// The user's id.
        id: Path<i64>,
        body: Json<SetRoleRequest>,
    ) -> Result<Json<RoleChanged>, ApiError> {
        if id.0 == admin.0.user_id {
            return Err(ApiError::Conflict(
                "admins cannot change their own role; another admin can".into(),
            ));
        }
        let role = body.0.role;
        let (target, by) = (id.0, admin.0.user_id);
        let state = state.0.clone();
        let (change, sessions_ended) = to_the_end(async move {
            let change = {
                let mut client = state.db.get().await?;
                users::set_role(&mut client, target, role.as_str(), by).await?
            };
            let ended = match &change {
                RoleChange::Changed { epoch, .. } => state.sessions.end_all(target, *epoch).await?,
                _ => 0,
            };
            Ok((change, ended))
        })
        .await?;
        let username = match change {
            RoleChange::Changed { username, .. } => username,
            RoleChange::NoSuchUser => {
                return Err(ApiError::NotFound(format!("no user with id {}", id.0)))
            }
            RoleChange::LastAdmin => {
                return Err(ApiError::Conflict(
                    "that would leave the service with no admin".into(),
                ))
            }
            RoleChange::NotAdmin => return Err(ApiError::Forbidden("this needs the admin role")),
        };
        tracing::info!(
            admin = admin.0.user_id,
            user_id = id.0,
            role = role.as_str(),
            sessions_ended,
            "role changed"
        );
        Ok(Json(RoleChanged {
            id: id.0,
            username,
            role,
            sessions_ended,
        }))
    }

    /// End all of a user's sessions
    #[oai(path = "/users/:id/sessions", method = "delete")]
    async fn end_sessions(
        &self,
        state: Data<&AuthState>,
        admin: AdminAuth,
        /// The user's id.
        id: Path<i64>,
    ) -> Result<SessionsEnded, ApiError> {
        let (target, by) = (id.0, admin.0.user_id);
        let state = state.0.clone();
        let ended = to_the_end(async move {
            let event = Event::SessionsEnded {
                user_id: target,
                by,
            };
            // A new credential epoch, so a login of the user in flight ends
            // too.
            let epoch = {
                let mut client = state.db.get().await?;
                users::end_sessions(&mut client, target, &event).await?
            }
            .ok_or_else(|| ApiError::NotFound(format!("no user with id {target}")))?;
            Ok(state.sessions.end_all(target, epoch).await?)
        })
        .await?;
        tracing::info!(
            admin = admin.0.user_id,
            user_id = id.0,
            ended,
            "sessions ended by an admin"
        );
        Ok(SessionsEnded::Ended)
    }
}
