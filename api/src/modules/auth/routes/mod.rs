//! Sign-in's HTTP edge: its areas of the API, the bearer schemes that guard
//! them, and how sign-in's errors become the core's [`ApiError`].

mod admin;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod login;
mod profile;
mod text;
mod users;

use std::future::Future;

use poem::endpoint::BoxEndpoint;
use poem::EndpointExt;
use poem_openapi::error::AuthorizationError;
use poem_openapi::{OpenApi, Tags};
use tracing::Instrument;

pub use login::{declare_metrics, AdminAuth, BearerAuth, LOGINS};

use super::domain::{NameError, PasswordError};
use super::passwords::HashError;
use super::throttle::LoginError;
use crate::error::ApiError;
use crate::storage::StorageError;

#[derive(Tags)]
pub enum AuthTags {
    /// Logging in and out.
    Auth,
    /// The signed-in user's own profile.
    Profile,
    /// What only admins may do.
    Admin,
}

/// Sign-in's part of the API.
pub fn api() -> impl OpenApi {
    (login::Api, profile::Api, admin::Api, users::Api)
}

/// Runs `work` in a task of its own, to its end even if the request is cut
/// off at its deadline or the client leaves. For a change committed in
/// PostgreSQL and the end of the sessions it ends, in Redis: one must not
/// stand without the other. The work stays in the request's span, so its
/// calls are still part of the request's trace and log lines.
pub(super) async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work.in_current_span())
        .await
        .map_err(ApiError::internal)?
}

/// What a 401 asks for: a bearer token from `POST /login`.
const CHALLENGE: &str = "Bearer";

/// 401: the bearer token is missing, malformed, unknown, expired or logged
/// out.
pub fn unauthenticated() -> ApiError {
    ApiError::Unauthorized {
        detail: "a valid bearer token is required",
        challenge: CHALLENGE,
    }
}

/// poem-openapi answers a request with no `Authorization` header itself,
/// before any checker runs: give it the same problem document as a bad
/// token.
pub fn missing_token_is_unauthenticated(endpoint: BoxEndpoint<'static>) -> BoxEndpoint<'static> {
    endpoint
        .catch_error(|_: AuthorizationError| async { unauthenticated() })
        .boxed()
}

impl From<LoginError> for ApiError {
    fn from(err: LoginError) -> Self {
        match err {
            LoginError::InvalidCredentials => ApiError::Unauthorized {
                detail: "invalid username or password",
                challenge: CHALLENGE,
            },
            LoginError::Throttled(standing) => ApiError::TooManyRequests {
                detail: "too many failed attempts for this account; try again later",
                standing,
            },
            LoginError::Storage(err) => err.into(),
            LoginError::Hash(err) => err.into(),
        }
    }
}

impl From<HashError> for ApiError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => ApiError::Overloaded("too many logins are being checked"),
            other => ApiError::internal(other),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(err: NameError) -> Self {
        ApiError::Validation(err.to_string())
    }
}

impl From<PasswordError> for ApiError {
    fn from(err: PasswordError) -> Self {
        ApiError::Validation(err.to_string())
    }
}

/// The constraints in `init.sql` that a client can trip, as what to tell
/// them; any other storage error is ours.
pub fn on_constraint(err: StorageError) -> ApiError {
    match err.constraint() {
        Some("users_username_lower_key") => ApiError::Conflict("that username is taken".into()),
        Some("users_username_format") => {
            ApiError::Validation("usernames are 3 to 32 letters, digits, '_', '.' or '-'".into())
        }
        Some("users_name_length") => ApiError::Validation("names are 1 to 100 characters".into()),
        _ => err.into(),
    }
}
