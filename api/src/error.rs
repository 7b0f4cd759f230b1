//! The HTTP edge's one error type, and the one place where any failure, ours
//! or the framework's, becomes an RFC 9457 problem document.

use std::sync::Arc;

use poem::http::{header, HeaderValue, StatusCode};
use poem::PathPattern;
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

use crate::metrics::DependencyFailed;
use crate::ratelimit::Standing;
use crate::requests::current_request_id;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// A problem document (RFC 9457). `type` is `about:blank` throughout, so
/// `title` is the status's reason phrase and `detail` carries the specifics.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request's id, as in its `X-Request-ID` header and in every log
    /// line about it: quote it when reporting a problem.
    #[oai(skip_serializing_if_is_none)]
    pub request_id: Option<String>,
}

/// A backing service whose outage turns into a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    Redis,
}

impl Dependency {
    /// Its name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dependency::Postgres => "the database",
            Dependency::Redis => "the session store",
        })
    }
}

/// Every way a request can fail in our own code. Each variant names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: login failed. Identical for unknown users and wrong passwords.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// 401 with `WWW-Authenticate: Bearer`: the bearer token is missing,
    /// malformed, unknown, expired or logged out.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// 403: signed in, but the user's role does not allow this.
    #[error("this needs the admin role")]
    Forbidden,
    /// 403: a password change whose current password is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// 404: the thing the path names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 429 with `Retry-After` and `RateLimit-*`: over a rate limit.
    #[error("{detail}")]
    TooManyRequests {
        detail: &'static str,
        standing: Standing,
    },
    /// 409: the request conflicts with existing state (a taken username).
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed JSON whose values break the contract.
    #[error("{0}")]
    Validation(String),
    /// 503 with `Retry-After`: a dependency did not answer in time.
    #[error("{0} is unavailable, try again shortly")]
    Unavailable(Dependency),
    /// 500: a bug or an unexpected failure. Logged in full, never detailed to
    /// the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidCredentials | ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::WrongPassword => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            // Timeouts and failed connects are the database being away.
            PoolError::Timeout(_) | PoolError::Backend(_) | PoolError::PostCreateHook(_) => {
                tracing::warn!(error = %err, "database pool could not hand out a connection");
                ApiError::Unavailable(Dependency::Postgres)
            }
            PoolError::Closed | PoolError::NoRuntimeSpecified => ApiError::internal(err),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        // A server-side error (SQLSTATE) is ours to explain; anything else is the
        // connection going away under us, which is an outage, not a bug.
        if err.as_db_error().is_some() {
            ApiError::internal(err)
        } else {
            tracing::warn!(error = %err, "database connection failed mid-request");
            ApiError::Unavailable(Dependency::Postgres)
        }
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        let status = self.status();
        let detail = match self {
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "request failed with an internal error");
                "the server failed to handle this request".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = problem_response(status, detail);
        if let ApiError::Unavailable(dependency) = self {
            response.set_data(DependencyFailed(dependency.label()));
        }
        if let ApiError::TooManyRequests { standing, .. } = self {
            let headers = response.headers_mut();
            standing.write_headers(headers);
            let retry_after = HeaderValue::from(standing.reset.max(1));
            headers.insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

/// Builds the problem document for `status`, with the headers its status
/// promises (`WWW-Authenticate` on 401, `Retry-After` on 503).
pub fn problem_response(status: StatusCode, detail: impl Into<String>) -> Response {
    let problem = Problem {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.into(),
        request_id: current_request_id(),
    };
    let body = problem.to_json_string();
    let mut response = Response::builder()
        .status(status)
        .content_type(PROBLEM_JSON)
        .body(Body::from_string(body));
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// The documented paths, from the OpenAPI document (so they cannot drift
/// from the routes): their methods, for the `Allow` header that RFC 9110
/// requires on a 405, and their templates (`/v2/users/{id}/role`), the
/// route of the request's log line and metrics.
#[derive(Clone, Default)]
pub struct DocumentedRoutes {
    paths: Arc<Vec<Documented>>,
}

struct Documented {
    template: Arc<str>,
    /// The template's segments; `{param}` matches any one.
    segments: Vec<String>,
    methods: String,
}

impl DocumentedRoutes {
    pub fn from_document(document: &serde_json::Value) -> Self {
        let Some(paths) = document["paths"].as_object() else {
            return DocumentedRoutes::default();
        };
        let paths = paths
            .iter()
            .map(|(path, operations)| {
                let methods: Vec<String> = operations
                    .as_object()
                    .map(|ops| ops.keys().map(|method| method.to_uppercase()).collect())
                    .unwrap_or_default();
                Documented {
                    template: path.as_str().into(),
                    segments: path.split('/').map(str::to_owned).collect(),
                    methods: methods.join(", "),
                }
            })
            .collect();
        DocumentedRoutes {
            paths: Arc::new(paths),
        }
    }

    /// Runs on every request: no allocation.
    fn find(&self, path: &str) -> Option<&Documented> {
        let matches = |segment: &String, part: &str| {
            segment == part || (segment.starts_with('{') && segment.ends_with('}'))
        };
        let parts = path.split('/').count();
        self.paths.iter().find(|documented| {
            documented.segments.len() == parts
                && documented
                    .segments
                    .iter()
                    .zip(path.split('/'))
                    .all(|(s, p)| matches(s, p))
        })
    }
}

impl<E: Endpoint> Middleware<E> for DocumentedRoutes {
    type Output = DocumentedRoutesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        DocumentedRoutesEndpoint {
            inner,
            routes: self.clone(),
        }
    }
}

/// Adds `Allow` to 405 answers, and names the route template.
pub struct DocumentedRoutesEndpoint<E> {
    inner: E,
    routes: DocumentedRoutes,
}

impl<E: Endpoint> Endpoint for DocumentedRoutesEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let path = request.uri().path().to_owned();
        let mut response = self.inner.call(request).await?.into_response();
        let Some(documented) = self.routes.find(&path) else {
            return Ok(response);
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            if let Ok(value) = HeaderValue::from_str(&documented.methods) {
                response.headers_mut().insert(header::ALLOW, value);
            }
        }
        // poem's own pattern numbers the parameters (`:param0`).
        response.set_data(PathPattern(documented.template.clone()));
        Ok(response)
    }
}

/// Turns any error that reached the top of the app (our `ApiError`, poem's
/// 404/405, body parse failures, a missing `Authorization` header) into a
/// problem document. Installed once with `catch_all_error`.
pub async fn render(err: poem::Error) -> Response {
    // The route that failed, for the request's log line and metrics.
    let route = err.data::<PathPattern>().cloned();
    let mut response = problem_for(err);
    if let Some(route) = route {
        response.set_data(route);
    }
    response
}

fn problem_for(err: poem::Error) -> Response {
    if err.is::<ApiError>() {
        return err.into_response();
    }
    let status = err.status();
    let detail = if status.is_server_error() {
        tracing::error!(error = %err, %status, "request failed");
        "the server failed to handle this request".to_owned()
    } else if status == StatusCode::UNAUTHORIZED {
        ApiError::Unauthenticated.to_string()
    } else {
        err.to_string()
    };
    problem_response(status, detail)
}

/// Documents, on every operation, the problem documents it may answer with.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let documented = [
            (
                400,
                "The request is malformed (unparseable JSON, wrong types, missing fields).",
            ),
            (
                401,
                "Missing, malformed, unknown, expired or logged-out bearer token; or failed login.",
            ),
            (
                403,
                "Signed in, but the role does not allow this; or a wrong current password.",
            ),
            (404, "What the path names does not exist."),
            (409, "The request conflicts with existing state."),
            (
                429,
                "Over a rate limit (per address, or failed logins per account); retry after `Retry-After` seconds.",
            ),
            (
                422,
                "A value breaks the contract (for example an empty or over-long name).",
            ),
            (413, "The body is larger than the service accepts."),
            (415, "The body is not `application/json`."),
            (431, "The headers are larger than the service accepts."),
            (
                500,
                "An unexpected failure; details are in the server log only.",
            ),
            (
                503,
                "PostgreSQL or Redis did not answer in time; retry after `Retry-After` seconds.",
            ),
        ];
        MetaResponses {
            responses: documented
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: PROBLEM_JSON,
                        schema: MetaSchemaRef::Reference(Problem::name().into_owned()),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self)
    }
}
