//! What the service knows about each request beyond its route: who sent it
//! ([`ClientIp`]), which request it is ([`RequestId`]), the one access-log
//! line and the metrics written when it is answered; how much it may send
//! ([`SizeLimits`]); and that its JSON names each key once
//! ([`UniqueJsonKeys`]).

pub(crate) mod json_keys;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ipnet::IpNet;
use opentelemetry::KeyValue;
use poem::error::ReadBodyError;
use poem::http::{header, HeaderName, HeaderValue, StatusCode};
use poem::PathPattern;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics::{self, DependencyFailed, Metrics};
use crate::telemetry;

/// The header a request's id travels in, from nginx to the service and back
/// to the client. Names, not `&str`s: inserting one made from a `&str`
/// copies it onto the heap on every answer.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// W3C Trace Context's answer: the trace and span that served the request.
pub const TRACE_RESPONSE_HEADER: HeaderName = HeaderName::from_static("traceresponse");
/// The header nginx puts the client's address in.
pub const REAL_IP_HEADER: &str = "x-real-ip";

/// The address of the client behind a request: the peer's own, or the
/// `X-Real-IP` a trusted proxy set. Anyone else's headers are ignored, so a
/// client cannot pass itself off as another address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A request's id: the proxy's `X-Request-ID` when it sent a usable one,
/// else one made here. It is in every log line of the request and in the
/// response's `X-Request-ID`. Shared, not copied, by everything that
/// carries it through a request (its extensions, the task's identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

/// What identifies the request being handled, for code that has no
/// `Request` at hand (the problem documents).
struct Identity {
    id: RequestId,
    /// Its trace's id, when traces are on.
    trace_id: Option<String>,
}

tokio::task_local! {
    static CURRENT: Identity;
}

/// The id of the request being handled, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|current| current.id.0.to_string()).ok()
}

/// The id of the trace of the request being handled, if traces are on.
pub fn current_trace_id() -> Option<String> {
    CURRENT
        .try_with(|current| current.trace_id.clone())
        .ok()
        .flatten()
}

/// The W3C `traceparent` of the work in progress (the request's, or its
/// PostgreSQL call's span), for work that continues elsewhere: an event a
/// consumer picks up. None when the service exports no traces.
pub fn current_traceparent() -> Option<String> {
    telemetry::current_traceparent()
}

/// Resolves who sent `request`, given the proxies trusted to say so.
pub fn client_ip(request: &Request, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request.remote_addr().as_socket_addr()?.ip();
    Some(resolve(
        peer,
        request.headers().get(REAL_IP_HEADER),
        trusted,
    ))
}

/// The peer itself, unless it is a trusted proxy naming someone else.
pub(crate) fn resolve(peer: IpAddr, real_ip: Option<&HeaderValue>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    real_ip
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| ip.to_canonical())
}

/// An incoming id is kept only if it is short and plain, since it goes into
/// logs and headers verbatim.
pub(crate) fn usable_request_id(value: &HeaderValue) -> Option<&str> {
    let id = value.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    (!id.is_empty() && id.len() <= 128 && id.chars().all(plain)).then_some(id)
}

/// An id for a request that came without a usable one: a random UUID's 32
/// hex digits, with no hyphens.
pub(crate) fn new_request_id() -> Arc<str> {
    Uuid::new_v4()
        .simple()
        .encode_lower(&mut Uuid::encode_buffer())
        .into()
}

/// Middleware, outermost: resolves the client and the request id, runs the
/// request in a span carrying both, echoes the id, and logs and counts each
/// request once. Handlers add to the span what only they know (the user).
pub struct RequestContext {
    trusted: Arc<[IpNet]>,
    metrics: Metrics,
}

impl RequestContext {
    pub fn new(trusted_proxies: &[IpNet], metrics: Metrics) -> Self {
        RequestContext {
            trusted: trusted_proxies.into(),
            metrics,
        }
    }
}

impl<E: Endpoint> Middleware<E> for RequestContext {
    type Output = RequestContextEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestContextEndpoint {
            inner,
            trusted: self.trusted.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

pub struct RequestContextEndpoint<E> {
    inner: E,
    trusted: Arc<[IpNet]>,
    metrics: Metrics,
}

impl<E: Endpoint> Endpoint for RequestContextEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let in_flight = self.metrics.start_request();
        // The proxy's id is echoed as the very value it came in (a shared
        // buffer, no copy); one made here is made into a value once.
        let given = request.headers().get(REQUEST_ID_HEADER);
        let (id, echo): (Arc<str>, _) = match given.and_then(usable_request_id) {
            Some(id) => (id.into(), given.cloned()),
            None => {
                let id = new_request_id();
                let echo = HeaderValue::from_str(&id).ok();
                (id, echo)
            }
        };
        let client = client_ip(&request, &self.trusted);
        let method = request.method().clone();
        // `route` and `user_id` are filled in once known.
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            client_ip = client.map(tracing::field::display),
            method = %method,
            path = %request.uri().path(),
            route = tracing::field::Empty,
            user_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        // Traces: the caller's trace continued (or one started), its id in
        // every log line of the request. Nothing of this when they are off.
        let trace = telemetry::continue_trace(&span, request.headers());
        if let Some(trace) = &trace {
            span.record("trace_id", trace.trace_id.as_str());
            telemetry::set_attributes(&span, http_attributes(&request, client));
        }
        if let Some(ip) = client {
            request.extensions_mut().insert(ClientIp(ip));
        }
        request.extensions_mut().insert(RequestId(id.clone()));
        let handled = async {
            let mut response = match self.inner.call(request).await {
                Ok(response) => response.into_response(),
                Err(err) => err.into_response(),
            };
            if let Some(value) = echo {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            if let Some(value) = trace
                .as_ref()
                .and_then(|trace| HeaderValue::from_str(&trace.response_header).ok())
            {
                response.headers_mut().insert(TRACE_RESPONSE_HEADER, value);
            }
            let route = route_of(&response);
            let status = response.status();
            let took = started.elapsed();
            let span = tracing::Span::current();
            span.record("route", &*route);
            if trace.is_some() {
                answered_attributes(&span, &route, status);
            }
            tracing::info!(
                status = status.as_u16(),
                // To the microsecond, `0.295` and not `0.29501499999999997`:
                // the float's last digits are noise to whoever reads the line.
                elapsed_ms = took.as_micros() as f64 / 1000.0,
                "answered"
            );
            self.count(&response, &method, route, took);
            drop(in_flight);
            Ok(response)
        };
        let identity = Identity {
            id: RequestId(id.clone()),
            trace_id: trace.as_ref().map(|trace| trace.trace_id.clone()),
        };
        CURRENT.scope(identity, handled.instrument(span)).await
    }
}

impl<E> RequestContextEndpoint<E> {
    fn count(
        &self,
        response: &Response,
        method: &poem::http::Method,
        route: Arc<str>,
        took: std::time::Duration,
    ) {
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.metrics.count(&metrics::RATE_LIMITED, &route);
        }
        if let Some(DependencyFailed(dependency)) = response.data::<DependencyFailed>() {
            self.metrics.count(&metrics::DEPENDENCY_ERRORS, dependency);
        }
        self.metrics
            .observe_request(method, route, status.as_u16(), took);
    }
}

/// The HTTP server conventions' attributes known when a request arrives.
/// The path is there (it names what was asked for); the query string, the
/// headers and the body, which may hold what a user typed, are not.
fn http_attributes(request: &Request, client: Option<IpAddr>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("http.request.method", request.method().as_str().to_owned()),
        KeyValue::new("url.path", request.uri().path().to_owned()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new(
            "network.protocol.version",
            match request.version() {
                poem::http::Version::HTTP_10 => "1.0",
                poem::http::Version::HTTP_2 => "2",
                _ => "1.1",
            },
        ),
    ];
    if let Some(client) = client {
        attributes.push(KeyValue::new("client.address", client.to_string()));
    }
    if let Some(peer) = request.remote_addr().as_socket_addr() {
        attributes.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
        attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
    }
    attributes
}

/// The attributes known once the request is answered: the route template
/// (not the path: it names the span) and the status; a 5xx marks the span
/// failed, as the conventions ask (a 4xx is the client's, not ours).
fn answered_attributes(span: &tracing::Span, route: &str, status: StatusCode) {
    let mut attributes = vec![KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    )];
    if route != metrics::UNMATCHED_ROUTE && route != metrics::ABANDONED_ROUTE {
        attributes.push(KeyValue::new("http.route", route.to_owned()));
    }
    if status.is_server_error() {
        attributes.push(KeyValue::new("error.type", status.as_str().to_owned()));
        telemetry::set_error(span, "server error");
    }
    telemetry::set_attributes(span, attributes);
}

/// The route template that answered (`/v2/users/{id}`, as the OpenAPI
/// document has it: see `error::DocumentedRoutes`); [`metrics::UNMATCHED_ROUTE`]
/// when none did.
fn route_of(response: &Response) -> Arc<str> {
    // A path no route takes still gets the empty pattern of the catch-all
    // nest at the root.
    let Some(PathPattern(pattern)) = response
        .data::<PathPattern>()
        .filter(|PathPattern(pattern)| !pattern.is_empty())
    else {
        return metrics::UNMATCHED_ROUTE.into();
    };
    pattern.clone()
}

/// Middleware: caps what a request may send, whatever its headers claim.
/// Headers past `max_header_bytes` in all get 431; a body is read up to
/// `max_body_bytes` and no further (a chunked body, or a `Content-Length`
/// that lies, included) and past it gets 413. nginx has the same body limit
/// in front; this one holds when the service is reached directly.
pub struct SizeLimits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
}

impl<E: Endpoint> Middleware<E> for SizeLimits {
    type Output = SizeLimitsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        SizeLimitsEndpoint {
            inner,
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

pub struct SizeLimitsEndpoint<E> {
    inner: E,
    max_body_bytes: usize,
    max_header_bytes: usize,
}

impl<E: Endpoint> Endpoint for SizeLimitsEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut request: Request) -> poem::Result<Self::Output> {
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err(poem::Error::from_string(
                format!(
                    "the request headers are over {} bytes",
                    self.max_header_bytes
                ),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ));
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > self.max_body_bytes) {
            return Err(body_too_large(self.max_body_bytes));
        }
        let body = read_body(&mut request, self.max_body_bytes).await?;
        request.set_body(body);
        self.inner.call(request).await
    }
}

/// The whole body, or 413 past `limit` bytes.
async fn read_body(request: &mut Request, limit: usize) -> poem::Result<Bytes> {
    let body = request.take_body();
    // No body at all (most requests: a GET, a DELETE): nothing to read.
    // poem's reader would still zero a 4 KiB buffer and box a reader for it,
    // about a twentieth of the service's own work on a `GET /v1/hello`.
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    body.into_bytes_limit(limit).await.map_err(|err| match err {
        ReadBodyError::PayloadTooLarge => body_too_large(limit),
        other => other.into(),
    })
}

fn body_too_large(limit: usize) -> poem::Error {
    poem::Error::from_string(
        format!("the request body is over {limit} bytes"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// Middleware: a JSON body (`application/json`, or any `application/*+json`)
/// in which an object names a key twice, at any depth, is refused with 400
/// before any handler reads it, naming the key. serde_json would keep the
/// last of the two, so whatever read the first (a proxy, a log, the
/// client's own code) and the handler would disagree about the request.
///
/// It goes inside [`SizeLimits`], which has read the body already; it reads
/// with the same cap all the same, so that its own read is bounded wherever
/// it is put.
pub(crate) struct UniqueJsonKeys {
    pub(crate) max_body_bytes: usize,
}

impl<E: Endpoint> Middleware<E> for UniqueJsonKeys {
    type Output = UniqueJsonKeysEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        UniqueJsonKeysEndpoint {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

pub(crate) struct UniqueJsonKeysEndpoint<E> {
    inner: E,
    max_body_bytes: usize,
}

impl<E: Endpoint> Endpoint for UniqueJsonKeysEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut request: Request) -> poem::Result<Self::Output> {
        if !request.content_type().is_some_and(is_json) {
            return self.inner.call(request).await;
        }
        let body = read_body(&mut request, self.max_body_bytes).await?;
        if let Some(key) = json_keys::duplicate_key(body.as_ref()) {
            return Err(poem::Error::from_string(
                format!(
                    "the JSON body names the key {} twice in one object",
                    shown(&key)
                ),
                StatusCode::BAD_REQUEST,
            ));
        }
        request.set_body(body);
        self.inner.call(request).await
    }
}

/// Whether a `Content-Type` is one the handlers read as JSON: poem-openapi
/// takes `application/json` and any `application/*+json`, parameters aside.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// A key as the problem document quotes it: escaped, and cut short, since
/// it is the client's text and may be as long as the body.
fn shown(key: &str) -> String {
    const MAX_CHARS: usize = 64;
    if key.chars().count() <= MAX_CHARS {
        return format!("{key:?}");
    }
    let start: String = key.chars().take(MAX_CHARS).collect();
    format!("{start:?}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(peer: &str, real_ip: Option<&str>, trusted: &[&str]) -> IpAddr {
        let trusted: Vec<IpNet> = trusted.iter().map(|net| net.parse().unwrap()).collect();
        let header = real_ip.map(|value| HeaderValue::from_str(value).unwrap());
        resolve(peer.parse().unwrap(), header.as_ref(), &trusted)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let client = resolved("10.1.2.3", Some("203.0.113.9"), &["10.0.0.0/8"]);
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn anyone_else_is_taken_at_their_own_address() {
        let client = resolved("198.51.100.7", Some("203.0.113.9"), &["10.0.0.0/8"]);
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn a_garbled_header_falls_back_to_the_peer() {
        let client = resolved("127.0.0.1", Some("not an address"), &["127.0.0.0/8"]);
        assert_eq!(client, ip("127.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let client = resolved("::ffff:127.0.0.1", Some("192.0.2.1"), &["127.0.0.0/8"]);
        assert_eq!(client, ip("192.0.2.1"));
    }

    proptest::proptest! {
        /// Whatever a client sends as X-Request-ID, what is kept (and so
        /// logged and echoed) is short and plain, or nothing.
        #[test]
        fn kept_request_ids_are_always_plain(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                if let Some(id) = usable_request_id(&value) {
                    proptest::prop_assert!(!id.is_empty() && id.len() <= 128);
                    proptest::prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
                }
            }
        }

        /// An untrusted peer is taken at its own address, whatever header
        /// it sends.
        #[test]
        fn untrusted_peers_cannot_name_another_client(peer in proptest::num::u32::ANY, header in ".{0,64}") {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(peer));
            let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
            proptest::prop_assume!(!trusted[0].contains(&peer));
            let value = HeaderValue::from_str(&header).ok();
            proptest::prop_assert_eq!(resolve(peer, value.as_ref(), &trusted), peer);
        }
    }

    #[test]
    fn json_bodies_are_told_by_their_content_type() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
            "application/problem+JSON ; q=1",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in ["text/plain", "application/jsonx", "text/json", "json", ""] {
            assert!(!is_json(other), "{other}");
        }
    }

    #[test]
    fn a_quoted_key_is_escaped_and_cut_short() {
        assert_eq!(shown("name"), "\"name\"");
        assert_eq!(shown("a\"b\n"), r#""a\"b\n""#);
        let long = shown(&"k".repeat(1000));
        assert_eq!(long, format!("{:?}…", "k".repeat(64)));
    }

    #[test]
    fn only_plain_short_request_ids_are_kept() {
        let id = |text: &str| {
            usable_request_id(&HeaderValue::from_str(text).unwrap()).map(str::to_owned)
        };
        assert_eq!(id("4f1c-aa_09.x").as_deref(), Some("4f1c-aa_09.x"));
        assert_eq!(id("has space"), None);
        assert_eq!(id("quote\"d"), None);
        assert_eq!(id(&"a".repeat(129)), None);
        assert_eq!(id(""), None);
    }
}
