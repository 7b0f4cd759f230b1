//! Entry points for the fuzz targets (`fuzz/`, `make fuzz`): each takes
//! arbitrary bytes, runs one of the parsers that untrusted or semi-trusted
//! input reaches, and asserts what that parser promises. They panic on a
//! broken promise, which is what the fuzzer reports. Built only with the
//! `fuzzing` feature (and for the unit tests, which run them on the seed
//! corpus), so that the parsers themselves stay private.

use std::net::IpAddr;
use std::sync::OnceLock;

use clap::{Args, FromArgMatches};
use ipnet::IpNet;
use poem::http::{header, HeaderValue, StatusCode};
use poem::Response;
use serde_json::Value;

use crate::config::{self, EnvFile, Settings};
use crate::error::{self, ApiError, PROBLEM_JSON};
use crate::openapi::compat::breaking_changes;
use crate::requests::{self, json_keys};

/// A request body: the duplicate-key check never panics, never reports a
/// key of a document serde_json wrote (its objects cannot repeat one), and
/// a key it reports is one the body names.
pub fn json_body(data: &[u8]) {
    let found = json_keys::duplicate_key(data);
    if let Some(key) = &found {
        let text = String::from_utf8_lossy(data);
        let quoted = serde_json::to_string(key).expect("a string serializes");
        assert!(
            text.contains(&quoted) || text.contains('\\'),
            "reported {quoted}, which the body does not name"
        );
    }
    if let Ok(document) = serde_json::from_slice::<Value>(data) {
        let written = serde_json::to_vec(&document).expect("a Value serializes");
        assert_eq!(json_keys::duplicate_key(&written), None);
    }
}

/// The problem renderer: whatever the status and detail, a problem
/// document that is valid JSON with exactly the documented fields, the
/// detail as given (but for a 5xx from the framework, never detailed), and
/// `Retry-After` on a 503 only.
pub fn problem(data: &[u8]) {
    let Some((status, detail)) = data.split_first_chunk::<2>() else {
        return;
    };
    let detail = String::from_utf8_lossy(detail).into_owned();
    let Ok(status) = StatusCode::from_u16(u16::from_be_bytes(*status) % 1000) else {
        return;
    };
    assert_problem(
        error::problem_response(status, detail.clone()),
        status,
        &detail,
    );
    for (err, status) in [
        (ApiError::NotFound(detail.clone()), StatusCode::NOT_FOUND),
        (ApiError::Conflict(detail.clone()), StatusCode::CONFLICT),
        (
            ApiError::Validation(detail.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        assert_problem(poem::IntoResponse::into_response(err), status, &detail);
    }
    let framework = poem::Error::from_string(detail.clone(), status);
    let rendered = runtime().block_on(error::render(framework));
    let shown = if status.is_server_error() {
        "the server failed to handle this request"
    } else {
        &detail
    };
    assert_problem(rendered, status, shown);
}

fn assert_problem(response: Response, status: StatusCode, detail: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE),
        Some(&HeaderValue::from_static(PROBLEM_JSON))
    );
    assert_eq!(
        response.headers().contains_key(header::RETRY_AFTER),
        status == StatusCode::SERVICE_UNAVAILABLE
    );
    let body = runtime()
        .block_on(response.into_body().into_vec())
        .expect("the body reads");
    let document: Value = serde_json::from_slice(&body).expect("a problem document is JSON");
    let fields = document
        .as_object()
        .expect("a problem document is an object");
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["detail", "status", "title", "type"]);
    assert_eq!(document["type"], "about:blank");
    assert_eq!(document["status"], status.as_u16());
    assert_eq!(document["detail"], detail);
    let title = document["title"].as_str().expect("the title is a string");
    assert!(!title.is_empty());
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime starts")
    })
}

/// The breaking-change checker on two documents (the bytes split at the
/// first 0xFF, which JSON text never holds; else one document twice):
/// never a panic, and a document compared with itself reports nothing.
pub fn openapi_compat(data: &[u8]) {
    let (old, new) = match data.iter().position(|&byte| byte == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let old = serde_json::from_slice::<Value>(old).unwrap_or_default();
    let new = serde_json::from_slice::<Value>(new).unwrap_or_default();
    for document in [&old, &new] {
        let found = breaking_changes(document, document);
        assert!(found.is_empty(), "against itself: {found:?}");
    }
    for change in breaking_changes(&old, &new) {
        assert!(!change.at.is_empty() && !change.what.is_empty());
    }
}

/// An env file as the service reads it at start and on SIGHUP: parsed
/// (never a panic), the settings parsed from it as `serve` parses them,
/// validated and described; the description never shows the database's or
/// Redis' password.
pub fn env_file(data: &[u8]) {
    let Ok(variables) = config::read_env_file(data) else {
        return;
    };
    let env_file = EnvFile::from_variables(variables);
    let command = env_file.apply(Settings::augment_args(
        clap::Command::new("fuzz").no_binary_name(true),
    ));
    let settings = command
        .try_get_matches_from(std::iter::empty::<String>())
        .ok()
        .and_then(|matches| Settings::from_arg_matches(&matches).ok());
    if let Some(settings) = settings {
        let _ = settings.validate();
        let described = settings.describe();
        assert_no_password(&settings.database.url, &settings.redis.url, &described);
    }
}

/// Each URL's password, as its client reads it, is not on its own line of
/// `shown` (the other URL may hold the same text as something else).
fn assert_no_password(database_url: &str, redis_url: &str, shown: &str) {
    let line = |name: &str| {
        let prefix = format!("{name}=");
        let found = shown.lines().find(|line| line.starts_with(&prefix));
        found.unwrap_or_default().to_owned()
    };
    if let Ok(database) = database_url.parse::<tokio_postgres::Config>() {
        let redacted = config::redact_url(database_url);
        let still = redacted
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|config| config.get_password().map(<[u8]>::to_vec));
        assert!(
            still.is_none() || still.as_deref() == Some(b"***"),
            "{redacted:?} still holds a password"
        );
        if let Some(secret) = database.get_password() {
            let secret = String::from_utf8_lossy(secret);
            assert_not_shown(&secret, database_url, &line("DATABASE_URL"));
        }
    }
    if let Ok(client) = redis::Client::open(redis_url) {
        if let Some(secret) = client.get_connection_info().redis_settings().password() {
            assert_not_shown(secret, redis_url, &line("REDIS_URL"));
        }
    }
}

/// The redacted `line` of `url` holds `secret` fewer times than `url`
/// does: the password itself is gone, whatever else (a database name) may
/// hold the same text. Short secrets may be in the line by chance (`pg` in
/// `postgres`).
fn assert_not_shown(secret: &str, url: &str, line: &str) {
    if secret.len() >= 8 {
        let before = url.matches(secret).count();
        let after = line.matches(secret).count();
        assert!(after < before.max(1), "{line:?} shows the password");
    }
}

/// The request headers the service believes: a kept `X-Request-ID` is
/// plain and short, and `X-Real-IP` names the client only when a trusted
/// proxy sent it. The first byte picks the peer, the rest is the header.
pub fn request_headers(data: &[u8]) {
    let Some((&peer, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    if let Some(id) = requests::usable_request_id(&value) {
        assert!(!id.is_empty() && id.len() <= 128, "{id:?}");
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        assert!(id.chars().all(plain), "{id:?}");
        HeaderValue::from_str(id).expect("a kept id is a header value");
    }
    let trusted: [IpNet; 2] = [
        "127.0.0.1/32".parse().expect("a net"),
        "::1/128".parse().expect("a net"),
    ];
    let peer = IpAddr::from([127, 0, 0, peer]);
    let client = requests::resolve(peer, Some(&value), &trusted);
    if peer != IpAddr::from([127, 0, 0, 1]) {
        assert_eq!(client, peer, "an untrusted peer named another client");
    }
    assert_eq!(client, client.to_canonical());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed corpus (fuzz/corpus/), every input that once failed among
    /// it, passes on the stable toolchain too.
    #[test]
    fn the_seed_corpus_passes() {
        type Check = fn(&[u8]);
        let targets: [(&str, Check); 5] = [
            ("json_body", json_body),
            ("problem", problem),
            ("openapi_compat", openapi_compat),
            ("env_file", env_file),
            ("request_headers", request_headers),
        ];
        for (target, check) in targets {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus")
                .join(target);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{dir:?}: {err}"));
            for entry in entries {
                let path = entry.expect("a corpus entry").path();
                check(&std::fs::read(&path).expect("readable"));
            }
        }
        // The checker's run is seeded with the service's own documents too.
        let documents = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi");
        for entry in std::fs::read_dir(documents).expect("openapi/") {
            let path = entry.expect("a document").path();
            if path.extension().is_some_and(|ext| ext == "json") {
                openapi_compat(&std::fs::read(&path).expect("readable"));
            }
        }
    }
}
