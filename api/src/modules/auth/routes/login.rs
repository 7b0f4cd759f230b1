//! Logging in and out, my sessions, and the bearer schemes that guard the rest:
//! [`BearerAuth`] for any signed-in user, [`AdminAuth`] for admins.

use poem::web::Data;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};
use uuid::Uuid;

use super::text::{NoControl, Text};
use super::{to_the_end, unauthenticated, AuthTags};
use crate::error::ApiError;
use crate::metrics::{CounterFamily, Metrics};
use crate::modules::auth::events::{self, Event};
use crate::modules::auth::sessions::{public_id, Session};
use crate::modules::auth::throttle::{Account, LoginError};
use crate::modules::auth::{users, AuthState};
use crate::requests::ClientIp;
use crate::storage::StorageError;

/// A session token from `POST /login`, sent as `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "UUID", checker = "authenticate")]
pub struct BearerAuth(pub Session);

/// A session token of an admin: no token or a bad one gets 401, anyone
/// else's 403. The role is read from PostgreSQL on every request, so a
/// demotion takes effect at once.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "UUID", checker = "authenticate_admin")]
pub struct AdminAuth(pub Session);

async fn authenticate_admin(req: &Request, bearer: Bearer) -> poem::Result<Session> {
    let session = authenticate(req, bearer).await?;
    let client = state(req)?.db.get().await.map_err(ApiError::from)?;
    let role = users::get_role(&client, session.user_id)
        .await
        .map_err(ApiError::from)?;
    match role.as_deref() {
        Some("admin") => Ok(session),
        Some(_) => Err(ApiError::Forbidden("this needs the admin role").into()),
        // A session whose user was deleted is no session at all.
        None => Err(unauthenticated().into()),
    }
}

fn state(req: &Request) -> Result<&AuthState, ApiError> {
    req.data::<AuthState>()
        .ok_or_else(|| ApiError::internal("AuthState is not attached to the route"))
}

/// Resolves the bearer token to its session. A token that is not a UUID is
/// refused without asking Redis; a Redis outage is a 503, never a pass.
async fn authenticate(req: &Request, bearer: Bearer) -> poem::Result<Session> {
    let state = state(req)?;
    let token = Uuid::try_parse(&bearer.token).map_err(|_| unauthenticated())?;
    match state.sessions.find(token).await.map_err(ApiError::from)? {
        Some(session) => {
            tracing::Span::current().record("user_id", session.user_id);
            Ok(session)
        }
        None => Err(unauthenticated().into()),
    }
}

/// Login attempts by outcome: `success`, `invalid_credentials`, `throttled`
/// (429), `unavailable` (503) or `error`.
pub const LOGINS: CounterFamily = CounterFamily {
    name: "logins_total",
    help: "Login attempts, by outcome.",
    label: "outcome",
};

const LOGIN_OUTCOMES: [&str; 5] = [
    "success",
    "invalid_credentials",
    "throttled",
    "unavailable",
    "error",
];

/// Shows every login outcome from the start, at 0.
pub fn declare_metrics(metrics: &Metrics) {
    metrics.declare(&LOGINS, &LOGIN_OUTCOMES);
}

fn login_outcome(result: &Result<LoginResponse, ApiError>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(ApiError::Unauthorized { .. }) => "invalid_credentials",
        Err(ApiError::TooManyRequests { .. }) => "throttled",
        Err(ApiError::Unavailable(_) | ApiError::Overloaded(_)) => "unavailable",
        Err(_) => "error",
    }
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct LoginRequest {
    /// Case-insensitive.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub username: Text<NoControl>,
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub password: Text,
}

#[derive(Debug, Object)]
pub struct TokenResponse {
    /// Opaque session token (a UUID v4).
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in. The token is also in the `Authorization` header, ready to be
    /// sent back as is.
    #[oai(status = 200)]
    Ok(
        Json<TokenResponse>,
        #[oai(header = "Authorization")] String,
        /// `no-store`: no cache, shared or the browser's, may keep a token.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

#[derive(ApiResponse)]
pub enum VerifyResponse {
    /// A live session: whose it is, in headers for nginx to pass on.
    #[oai(status = 200)]
    Verified(
        /// The user's id.
        #[oai(header = "X-User-Id")]
        String,
        /// The user's username (ASCII letters, digits, `_`, `.`, `-`).
        #[oai(header = "X-User-Name")]
        String,
        /// `user` or `admin`.
        #[oai(header = "X-User-Role")]
        String,
    ),
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// The token is dead from now on; the user's other sessions live on.
    #[oai(status = 204)]
    LoggedOut,
}

#[derive(ApiResponse)]
pub enum LogoutEverywhereResponse {
    /// Every session of the user has ended, this one included.
    #[oai(status = 204)]
    LoggedOut,
}

/// One of my sessions. Its token is never shown, only a public id.
#[derive(Debug, Object)]
pub struct SessionSummary {
    /// A short hash of the token: the session's name in logs too.
    pub id: String,
    /// When it began, Unix time in seconds.
    pub created_at: u64,
    /// When it was last used, Unix time in seconds.
    pub last_seen_at: u64,
    /// Where it logged in from, as nginx saw it.
    pub client_ip: Option<String>,
    /// This request's own session.
    pub current: bool,
}

pub struct Api;

#[OpenApi(tag = "AuthTags::Auth")]
impl Api {
    /// Log in
    ///
    /// Checks the password and starts a new session: every login makes a new
    /// token. Unknown users and wrong passwords get the same 401. After
    /// LOGIN_MAX_FAILURES failures within LOGIN_FAILURE_WINDOW_SECONDS an
    /// account gets 429 until the window ends, whatever the address.
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        state: Data<&AuthState>,
        request: &Request,
        body: Json<LoginRequest>,
    ) -> Result<LoginResponse, ApiError> {
        let result = log_in(&state, request, body.0).await;
        state.metrics.count(&LOGINS, login_outcome(&result));
        result
    }

    /// Log out
    ///
    /// Ends the session of the token sent; other sessions of the same user
    /// are untouched.
    #[oai(path = "/logout", method = "post")]
    async fn logout(
        &self,
        state: Data<&AuthState>,
        auth: BearerAuth,
    ) -> Result<LogoutResponse, ApiError> {
        state.sessions.revoke(auth.0.token).await?;
        let session = public_id(auth.0.token);
        let event = Event::LoggedOut {
            user_id: auth.0.user_id,
            session: Some(&session),
        };
        record_now(&state, &event).await?;
        tracing::info!(user_id = auth.0.user_id, %session, "logged out");
        Ok(LogoutResponse::LoggedOut)
    }

    /// Verify a session (forward auth)
    ///
    /// For nginx's `auth_request` in front of other services (nginx.conf has
    /// an example; nginx refuses this path to clients): 200 with who the
    /// bearer token belongs to, else 401. Each call counts as a use of the
    /// session, as any request with it does.
    #[oai(path = "/auth/verify", method = "get")]
    async fn verify(
        &self,
        state: Data<&AuthState>,
        auth: BearerAuth,
    ) -> Result<VerifyResponse, ApiError> {
        let client = state.db.get().await.map_err(StorageError::from)?;
        // A session whose user was deleted is no session at all.
        let (username, role) = users::get_identity(&client, auth.0.user_id)
            .await?
            .ok_or_else(unauthenticated)?;
        Ok(VerifyResponse::Verified(
            auth.0.user_id.to_string(),
            username,
            role,
        ))
    }

    /// List my sessions
    ///
    /// Every live session of the signed-in user, oldest first.
    #[oai(path = "/v2/sessions", method = "get")]
    async fn my_sessions(
        &self,
        state: Data<&AuthState>,
        auth: BearerAuth,
    ) -> Result<Json<Vec<SessionSummary>>, ApiError> {
        let sessions = state.sessions.list(auth.0.user_id).await?;
        let current = public_id(auth.0.token);
        Ok(Json(
            sessions
                .into_iter()
                .map(|info| SessionSummary {
                    current: info.id == current,
                    id: info.id,
                    created_at: info.created / 1000,
                    last_seen_at: info.last_seen / 1000,
                    client_ip: info.client_ip,
                })
                .collect(),
        ))
    }

    /// Log out everywhere
    ///
    /// Ends every session of the signed-in user, this one included.
    #[oai(path = "/v2/sessions", method = "delete")]
    async fn logout_everywhere(
        &self,
        state: Data<&AuthState>,
        auth: BearerAuth,
    ) -> Result<LogoutEverywhereResponse, ApiError> {
        let user_id = auth.0.user_id;
        let state = state.0.clone();
        let ended = to_the_end(async move {
            let event = Event::LoggedOut {
                user_id,
                session: None,
            };
            // A new credential epoch, so a login of this user in flight
            // ends too.
            let epoch = {
                let mut client = state.db.get().await.map_err(StorageError::from)?;
                users::end_sessions(&mut client, user_id, &event)
                    .await?
                    .ok_or_else(unauthenticated)?
            };
            Ok(state.sessions.end_all(user_id, epoch).await?)
        })
        .await?;
        tracing::info!(user_id, ended, "logged out everywhere");
        Ok(LogoutEverywhereResponse::LoggedOut)
    }
}

/// Checks the password and starts the session (see [`Api::login`]).
async fn log_in(
    state: &AuthState,
    request: &Request,
    body: LoginRequest,
) -> Result<LoginResponse, ApiError> {
    let (username, password) = (body.username.into_string(), body.password.into_string());
    // Usernames are ASCII (the schema's users_username_format). Any other
    // spelling is nobody's, and is not looked up: PostgreSQL's lower()
    // folds some of them onto ASCII names (`vİctim` onto `victim`), which
    // would reach an account under another throttle count.
    let credentials = if username.is_ascii() {
        let client = state.db.get().await.map_err(StorageError::from)?;
        users::find_credentials(&client, &username).await?
    } else {
        None
    };
    let account = match &credentials {
        Some(found) => Account::User(found.id),
        None => Account::Unknown(&username),
    };
    let check = async {
        let (user, stored_hash) = match credentials {
            Some(found) => (Some((found.id, found.epoch)), Some(found.password_hash)),
            None => (None, None),
        };
        let verified = state.passwords.verify(password, stored_hash).await?;
        Ok::<_, LoginError>(user.filter(|_| verified))
    };
    let (user_id, epoch) = state.throttle.password_check(account, check).await?;
    let client_ip = request.extensions().get::<ClientIp>().map(|ip| ip.0);
    // The session and its event in a task of their own: a request whose
    // client leaves is dropped where it stands (connections.rs), and one
    // must not stand without the other.
    let owned = state.clone();
    let (session, session_id) = to_the_end(async move {
        let state = owned;
        // `None`: the password was changed (or the sessions ended) while it
        // was being checked, so it no longer opens a session.
        let session = state
            .sessions
            .create(user_id, epoch, client_ip)
            .await?
            .ok_or(LoginError::InvalidCredentials)?;
        let session_id = public_id(session.token);
        let event = Event::LoggedIn {
            user_id,
            session: &session_id,
        };
        if let Err(err) = record_now(&state, &event).await {
            // No login without its event: undo it (the token was never shown).
            let _ = state.sessions.revoke(session.token).await;
            return Err(err);
        }
        Ok((session, session_id))
    })
    .await?;
    tracing::Span::current().record("user_id", user_id);
    tracing::info!(user_id, session = %session_id, "logged in");
    let token = session.token.as_hyphenated().to_string();
    let header = format!("Bearer {token}");
    Ok(LoginResponse::Ok(
        Json(TokenResponse {
            token,
            token_type: "Bearer".into(),
            expires_in: state.sessions.expires_in().as_secs(),
        }),
        header,
        "no-store".into(),
    ))
}

/// Records the event of a change already made in Redis (a login or a logout
/// changes no PostgreSQL row, so there is no transaction to share).
async fn record_now(state: &AuthState, event: &Event<'_>) -> Result<(), ApiError> {
    let client = state.db.get().await.map_err(StorageError::from)?;
    events::record(&client, event).await?;
    Ok(())
}
