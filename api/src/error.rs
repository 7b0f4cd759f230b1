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
use crate::requests::{current_request_id, current_trace_id};
use crate::storage::{BoxError, Dependency, StorageError};

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
    /// The id of the request's trace (W3C trace context), when the service
    /// exports traces: it finds the request in the trace backend.
    #[oai(skip_serializing_if_is_none)]
    pub trace_id: Option<String>,
}

/// Every way a request can fail in our own code. Each variant names its
/// status; modules turn their own errors into one of these at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401, with `WWW-Authenticate` naming the scheme that would pass.
    #[error("{detail}")]
    Unauthorized {
        detail: &'static str,
        challenge: &'static str,
    },
    /// 403: known, but not allowed to do this.
    #[error("{0}")]
    Forbidden(&'static str),
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
    /// 503 with `Retry-After`: the service has more of this work queued
    /// than it can do in time (password checks under a flood).
    #[error("{0}, try again shortly")]
    Overloaded(&'static str),
    /// 503 with `Retry-After`: the request took longer than
    /// REQUEST_TIMEOUT_MS (a dependency frozen rather than gone, say).
    #[error("no answer within {0} ms, try again shortly")]
    TimedOut(u64),
    /// 500: a bug or an unexpected failure. Logged in full, with its causes,
    /// and never detailed to the client.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn internal(err: impl Into<BoxError>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) | ApiError::TimedOut(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            // The storage layer has logged the outage.
            StorageError::Unavailable { dependency, .. } => ApiError::Unavailable(dependency),
            failed @ StorageError::Failed(_) => ApiError::Internal(failed.into()),
        }
    }
}

/// Handlers borrow connections with `?`.
impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        StorageError::from(err).into()
    }
}

/// `err` and its causes, outermost first: `a: b: c`. Written once, in
/// telemetry, which logs chains too and cannot use this module (this one
/// reaches it through the request's trace id).
pub use crate::telemetry::chain;

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        let status = self.status();
        let detail = match self {
            ApiError::Internal(_) => {
                tracing::error!(error = %chain(self), "request failed with an internal error");
                "the server failed to handle this request".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = problem_response(status, detail);
        match self {
            ApiError::Unavailable(dependency) => {
                response.set_data(DependencyFailed(dependency.label()));
            }
            ApiError::Unauthorized { challenge, .. } => {
                let challenge = HeaderValue::from_static(challenge);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            ApiError::TooManyRequests { standing, .. } => {
                let headers = response.headers_mut();
                standing.write_headers(headers);
                let retry_after = HeaderValue::from(standing.reset.max(1));
                headers.insert(header::RETRY_AFTER, retry_after);
            }
            _ => {}
        }
        response
    }
}

/// Builds the problem document for `status`, with `Retry-After` on a 503.
pub fn problem_response(status: StatusCode, detail: impl Into<String>) -> Response {
    let problem = Problem {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.into(),
        request_id: current_request_id(),
        trace_id: current_trace_id(),
    };
    let body = problem.to_json_string();
    let mut response = Response::builder()
        .status(status)
        .content_type(PROBLEM_JSON)
        .body(Body::from_string(body));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
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
    paths: Arc<Paths>,
}

#[derive(Default)]
struct Paths {
    /// The paths without a parameter, sorted by path: most requests' route
    /// is found by a binary search, without splitting their path (a scan of
    /// every template was 2,000 instructions of a `/v1/hello`).
    exact: Vec<Documented>,
    /// The templates with a parameter, in the document's order.
    templated: Vec<Documented>,
}

struct Documented {
    template: Arc<str>,
    /// The template's segments; `{param}` matches any one.
    segments: Vec<String>,
    methods: String,
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

impl DocumentedRoutes {
    pub fn from_document(document: &serde_json::Value) -> Self {
        let Some(paths) = document["paths"].as_object() else {
            return DocumentedRoutes::default();
        };
        let (templated, mut exact): (Vec<_>, Vec<_>) = paths
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
            .partition(|documented| documented.segments.iter().any(|s| is_parameter(s)));
        exact.sort_by(|a, b| a.template.cmp(&b.template));
        DocumentedRoutes {
            paths: Arc::new(Paths { exact, templated }),
        }
    }

    /// Runs on every request: no allocation. A path that is a route of its
    /// own is that route, before any template it also fits, as poem's
    /// router has it (`/v2/users/me` before `/v2/users/{id}`).
    fn find(&self, path: &str) -> Option<&Documented> {
        let Paths { exact, templated } = &*self.paths;
        if let Ok(at) = exact.binary_search_by(|documented| (*documented.template).cmp(path)) {
            return exact.get(at);
        }
        let parts = path.split('/').count();
        templated.iter().find(|documented| {
            documented.segments.len() == parts
                && documented
                    .segments
                    .iter()
                    .zip(path.split('/'))
                    .all(|(segment, part)| segment == part || is_parameter(segment))
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
        // Found before the request moves on, so its path need not be copied.
        let documented = self.routes.find(request.uri().path());
        let mut response = self.inner.call(request).await?.into_response();
        let Some(documented) = documented else {
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

/// The answer to a request whose handler panicked (`CatchPanic`, at the
/// edge): a 500 problem document like any other, and the panic in the log
/// beside the request's id, instead of a dropped connection.
pub fn panicked(panic: Box<dyn std::any::Any + Send>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = %message, "request failed: its handler panicked");
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed to handle this request",
    )
}

/// Turns any error that reached the top of the app (our `ApiError`, poem's
/// 404/405, body parse failures) into a problem document. Installed once with `catch_all_error`.
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
            (401, "The credentials are missing or not valid."),
            (403, "The credentials are valid, but do not allow this."),
            (404, "What the path names does not exist."),
            (409, "The request conflicts with existing state."),
            (429, "Over a rate limit; retry after `Retry-After` seconds."),
            (
                422,
                "A value breaks the contract (a well-formed value outside its rules).",
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
                "A backing service did not answer in time; retry after `Retry-After` seconds.",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(paths: &[&str]) -> DocumentedRoutes {
        let paths: serde_json::Map<_, _> = paths
            .iter()
            .map(|path| (path.to_string(), serde_json::json!({ "get": {} })))
            .collect();
        DocumentedRoutes::from_document(&serde_json::json!({ "paths": paths }))
    }

    fn route(routes: &DocumentedRoutes, path: &str) -> Option<String> {
        routes.find(path).map(|found| found.template.to_string())
    }

    #[test]
    fn a_request_is_named_by_its_own_path_or_the_template_it_fits() {
        let routes = routes(&[
            "/getName",
            "/v1/hello",
            "/v2/users",
            "/v2/users/{id}",
            "/v2/users/{id}/role",
            "/v2/users/me",
        ]);
        for path in ["/getName", "/v1/hello", "/v2/users", "/v2/users/me"] {
            assert_eq!(route(&routes, path).as_deref(), Some(path));
        }
        assert_eq!(
            route(&routes, "/v2/users/7").as_deref(),
            Some("/v2/users/{id}")
        );
        assert_eq!(
            route(&routes, "/v2/users/7/role").as_deref(),
            Some("/v2/users/{id}/role")
        );
        for path in [
            "/",
            "/v1",
            "/v1/hello/",
            "/v1/hellos",
            "/V1/hello",
            "/v2/users/7/x",
        ] {
            assert_eq!(route(&routes, path), None, "{path}");
        }
    }
}
