//! Fixed documents (the OpenAPI documents, the docs page and Swagger UI's
//! assets) served as shared bytes with an `ETag`: a request costs a
//! reference count, not a copy of the body, and a client that has the
//! body already gets `304 Not Modified` and no body at all.

use std::hash::{DefaultHasher, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, Request, Response};

/// How long a client may keep a body before asking again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Freshness {
    /// Ask every time (`no-cache`): what the service documents changes on
    /// any deploy, and a revalidation that ends in 304 costs no body.
    Revalidate,
    /// Keep it a day without asking: Swagger UI's code, which changes only
    /// with the crate that ships it.
    OneDay,
}

impl Freshness {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Freshness::Revalidate => "no-cache",
            Freshness::OneDay => "public, max-age=86400",
        })
    }
}

/// A body and what goes with it, made once.
struct Body {
    bytes: Bytes,
    etag: HeaderValue,
}

impl Body {
    fn new(bytes: Bytes) -> Self {
        // The tag only has to change when the body does, and be the same in
        // every worker: `DefaultHasher::new` has fixed keys, so one build's
        // workers agree (a new build may tag the same body anew, which
        // costs a client one download).
        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        hasher.write_usize(bytes.len());
        // Hex digits in quotes: always a valid header value.
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Body { bytes, etag }
    }
}

/// An endpoint answering GET (and HEAD) with one fixed body. See [`fixed`]
/// and [`lazy`].
pub(crate) struct Cached {
    content_type: &'static str,
    freshness: Freshness,
    body: OnceLock<Option<Body>>,
    /// Makes the body on first use; None when it cannot be made.
    make: Arc<dyn Fn() -> Option<Bytes> + Send + Sync>,
}

/// `bytes`, made now.
pub(crate) fn fixed(
    bytes: impl Into<Bytes>,
    content_type: &'static str,
    freshness: Freshness,
) -> Cached {
    let body = OnceLock::new();
    let _ = body.set(Some(Body::new(bytes.into())));
    Cached {
        content_type,
        freshness,
        body,
        make: Arc::new(|| None),
    }
}

/// A body made by `make` on the first request that wants it, and kept: for
/// large ones few requests want (Swagger UI's 1.5 MB of script), which an
/// idle worker then never holds in memory.
pub(crate) fn lazy(
    make: impl Fn() -> Option<Bytes> + Send + Sync + 'static,
    content_type: &'static str,
    freshness: Freshness,
) -> Cached {
    Cached {
        content_type,
        freshness,
        body: OnceLock::new(),
        make: Arc::new(make),
    }
}

impl Endpoint for Cached {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let body = self.body.get_or_init(|| (self.make)().map(Body::new));
        let Some(body) = body else {
            tracing::error!(
                path = request.uri().path(),
                "this document could not be made"
            );
            return Err(poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let builder = Response::builder()
            .header(header::ETAG, body.etag.clone())
            .header(header::CACHE_CONTROL, self.freshness.header());
        if has(&request, &body.etag) {
            return Ok(builder.status(StatusCode::NOT_MODIFIED).finish());
        }
        Ok(builder
            .content_type(self.content_type)
            .body(body.bytes.clone()))
    }
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`). The
/// comparison is weak, as RFC 9110 asks for If-None-Match.
fn has(request: &Request, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn get(endpoint: &Cached, if_none_match: Option<&str>) -> (Response, Bytes) {
        let mut request = Request::builder();
        if let Some(tags) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tags);
        }
        let mut response = endpoint.call(request.finish()).await.unwrap();
        let body = response.take_body().into_bytes().await.unwrap();
        (response, body)
    }

    #[tokio::test]
    async fn a_client_with_the_body_gets_304_and_no_body() {
        let endpoint = fixed("{}", "application/json", Freshness::Revalidate);
        let (first, body) = get(&endpoint, None).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(first.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(&body[..], b"{}");
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();

        for asked in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".into(),
        ] {
            let (again, body) = get(&endpoint, Some(&asked)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{asked}");
            assert_eq!(again.headers()[header::ETAG], etag.as_str());
            assert!(body.is_empty());
        }
        let (other, body) = get(&endpoint, Some("\"other\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(&body[..], b"{}");
    }

    #[tokio::test]
    async fn another_body_has_another_etag() {
        let one = get(&fixed("one", "text/plain", Freshness::Revalidate), None)
            .await
            .0;
        let two = get(&fixed("two", "text/plain", Freshness::Revalidate), None)
            .await
            .0;
        assert_ne!(one.headers()[header::ETAG], two.headers()[header::ETAG]);
    }

    #[tokio::test]
    async fn a_lazy_body_is_made_once_on_first_use() {
        let made = Arc::new(AtomicUsize::new(0));
        let counted = made.clone();
        let endpoint = lazy(
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
                Some(Bytes::from_static(b"body"))
            },
            "text/plain",
            Freshness::OneDay,
        );
        assert_eq!(made.load(Ordering::Relaxed), 0);
        for _ in 0..3 {
            let (response, body) = get(&endpoint, None).await;
            assert_eq!(
                response.headers()[header::CACHE_CONTROL],
                "public, max-age=86400"
            );
            assert_eq!(&body[..], b"body");
        }
        assert_eq!(made.load(Ordering::Relaxed), 1);
    }
}
