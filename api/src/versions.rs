//! API versions: which version a path belongs to, and which versions are
//! deprecated.
//!
//! A version is a path prefix, `/v1`, `/v2`: whatever the routes serve under
//! one is that version. Deprecations are declared in `api/versions.toml`,
//! compiled in, so that the OpenAPI documents (and their committed snapshots
//! in `openapi/`) always say what the running service does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use poem::http::header::{self, HeaderName, HeaderValue};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use serde::Deserialize;
use toml::value::Datetime;

/// `api/versions.toml` as committed.
pub const POLICY: &str = include_str!("../versions.toml");

/// The version `path` belongs to: `v1` for `/v1/hello`.
pub fn version_of(path: &str) -> Option<&str> {
    let segment = path.strip_prefix('/')?.split('/').next()?;
    number(segment).map(|_| segment)
}

/// 3 for `v3`; `None` for anything that is not `v` and a number without a
/// leading zero.
pub fn number(version: &str) -> Option<u32> {
    let digits = version.strip_prefix('v')?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Sorts versions oldest first (`v2` before `v10`).
pub fn sort(versions: &mut [String]) {
    versions.sort_by_key(|version| number(version));
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("api/versions.toml: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("api/versions.toml: [{version}] is not a version this service serves ({served})")]
    Unknown { version: String, served: String },
    #[error("api/versions.toml: [{version}] {field} must be a date such as 2027-05-01")]
    NotADate {
        version: String,
        field: &'static str,
    },
    #[error("api/versions.toml: [{version}] sunset must come after its deprecation")]
    SunsetFirst { version: String },
    #[error("api/versions.toml: [{version}] successor {successor} is not a newer version this service serves")]
    Successor { version: String, successor: String },
}

/// One entry of `api/versions.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    deprecated: Datetime,
    sunset: Option<Datetime>,
    successor: Option<String>,
}

/// A deprecated version, and the headers its responses carry.
#[derive(Clone, Debug)]
pub struct Deprecation {
    /// The date, as written: `2026-11-01`.
    pub since: String,
    /// When it may be removed.
    pub sunset: Option<String>,
    /// The version to move to; by default the next one served.
    pub successor: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Deprecation {
    /// `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the
    /// successor's OpenAPI document.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

/// The deprecation policy of the versions a service serves.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    deprecated: BTreeMap<String, Deprecation>,
}

impl Versions {
    /// Reads a policy written like `api/versions.toml`, for a service that
    /// serves `served` (oldest first).
    pub fn parse(text: &str, served: &[String]) -> Result<Self, PolicyError> {
        let entries: BTreeMap<String, Entry> = toml::from_str(text)?;
        let mut deprecated = BTreeMap::new();
        for (version, entry) in entries {
            let Some(position) = served.iter().position(|v| *v == version) else {
                return Err(PolicyError::Unknown {
                    version,
                    served: served.join(", "),
                });
            };
            let since = instant(&entry.deprecated).ok_or_else(|| PolicyError::NotADate {
                version: version.clone(),
                field: "deprecated",
            })?;
            let sunset = match &entry.sunset {
                None => None,
                Some(date) => Some(instant(date).ok_or_else(|| PolicyError::NotADate {
                    version: version.clone(),
                    field: "sunset",
                })?),
            };
            if sunset.is_some_and(|sunset| sunset <= since) {
                return Err(PolicyError::SunsetFirst { version });
            }
            let newer = &served[position + 1..];
            let successor = match entry.successor {
                Some(successor) if newer.contains(&successor) => Some(successor),
                Some(successor) => return Err(PolicyError::Successor { version, successor }),
                None => newer.first().cloned(),
            };
            let headers = headers(since, sunset, successor.as_deref());
            let deprecation = Deprecation {
                since: entry.deprecated.to_string(),
                sunset: entry.sunset.map(|date| date.to_string()),
                successor,
                headers,
            };
            deprecated.insert(version, deprecation);
        }
        Ok(Versions { deprecated })
    }

    pub fn deprecation(&self, version: &str) -> Option<&Deprecation> {
        self.deprecated.get(version)
    }

    pub fn is_deprecated(&self, version: &str) -> bool {
        self.deprecated.contains_key(version)
    }
}

fn headers(
    since: SystemTime,
    sunset: Option<SystemTime>,
    successor: Option<&str>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    let seconds = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // A structured-field date: `@` and Unix seconds.
    let values = [
        (
            HeaderName::from_static("deprecation"),
            Some(["@", &seconds.to_string()].concat()),
        ),
        (
            HeaderName::from_static("sunset"),
            sunset.map(httpdate::fmt_http_date),
        ),
        (
            header::LINK,
            successor
                .map(|next| ["</", next, "/openapi.json>; rel=\"successor-version\""].concat()),
        ),
    ];
    for (name, value) in values {
        if let Some(value) = value.and_then(|v| HeaderValue::try_from(v).ok()) {
            headers.push((name, value));
        }
    }
    headers
}

/// Midnight UTC of a TOML date (`2027-05-01`); `None` for anything else.
fn instant(datetime: &Datetime) -> Option<SystemTime> {
    let (Some(date), None, None) = (datetime.date, datetime.time, datetime.offset) else {
        return None;
    };
    let days = days_from_civil(i64::from(date.year), date.month.into(), date.day.into());
    let seconds = u64::try_from(days).ok()?.checked_mul(86_400)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Adds a deprecated version's headers to every response under it, errors
/// included.
#[derive(Clone)]
pub struct DeprecationHeaders {
    versions: Arc<Versions>,
}

impl DeprecationHeaders {
    pub fn new(versions: Versions) -> Self {
        DeprecationHeaders {
            versions: Arc::new(versions),
        }
    }
}

impl<E: Endpoint> Middleware<E> for DeprecationHeaders {
    type Output = DeprecationHeadersEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        DeprecationHeadersEndpoint {
            inner,
            versions: self.versions.clone(),
        }
    }
}

pub struct DeprecationHeadersEndpoint<E> {
    inner: E,
    versions: Arc<Versions>,
}

impl<E: Endpoint> Endpoint for DeprecationHeadersEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let deprecation =
            version_of(request.uri().path()).and_then(|version| self.versions.deprecation(version));
        let mut response = self.inner.call(request).await?.into_response();
        if let Some(deprecation) = deprecation {
            for (name, value) in deprecation.headers() {
                response.headers_mut().append(name, value.clone());
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<String> {
        vec!["v1".into(), "v2".into(), "v3".into()]
    }

    fn header<'a>(deprecation: &'a Deprecation, name: &str) -> Option<&'a str> {
        deprecation
            .headers()
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, value)| value.to_str().ok())
    }

    #[test]
    fn versions_are_the_first_path_segment() {
        assert_eq!(version_of("/v1/hello"), Some("v1"));
        assert_eq!(version_of("/v12"), Some("v12"));
        assert_eq!(version_of("/healthz"), None);
        assert_eq!(version_of("/v01/hello"), None);
        assert_eq!(version_of("/vx/hello"), None);
        assert_eq!(version_of("/v/hello"), None);
        assert_eq!(version_of("v1/hello"), None);
    }

    #[test]
    fn versions_sort_by_number() {
        let mut versions = vec!["v10".to_owned(), "v2".into(), "v1".into()];
        sort(&mut versions);
        assert_eq!(versions, ["v1", "v2", "v10"]);
    }

    #[test]
    fn a_deprecated_version_gets_the_rfc_headers() {
        let text = "[v1]\ndeprecated = 2026-11-01\nsunset = 2027-05-01\n";
        let versions = Versions::parse(text, &served()).unwrap();
        let v1 = versions.deprecation("v1").unwrap();
        // 2026-11-01T00:00:00Z.
        assert_eq!(header(v1, "deprecation"), Some("@1793491200"));
        assert_eq!(header(v1, "sunset"), Some("Sat, 01 May 2027 00:00:00 GMT"));
        // The successor is the next version unless named.
        assert_eq!(
            header(v1, "link"),
            Some("</v2/openapi.json>; rel=\"successor-version\"")
        );
        assert!(!versions.is_deprecated("v2"));
    }

    #[test]
    fn a_named_successor_and_no_sunset() {
        let text = "[v1]\ndeprecated = 2026-11-01\nsuccessor = \"v3\"\n";
        let versions = Versions::parse(text, &served()).unwrap();
        let v1 = versions.deprecation("v1").unwrap();
        assert_eq!(header(v1, "sunset"), None);
        assert_eq!(
            header(v1, "link"),
            Some("</v3/openapi.json>; rel=\"successor-version\"")
        );
    }

    #[test]
    fn the_newest_version_has_no_successor_link() {
        let versions = Versions::parse("[v3]\ndeprecated = 2026-11-01\n", &served()).unwrap();
        assert_eq!(header(versions.deprecation("v3").unwrap(), "link"), None);
    }

    #[test]
    fn mistakes_in_the_policy_are_refused() {
        let refused = [
            "[v9]\ndeprecated = 2026-11-01\n",
            "[v1]\ndeprecated = \"soon\"\n",
            "[v1]\ndeprecated = 2026-11-01T10:00:00Z\n",
            "[v1]\ndeprecated = 2026-11-01\nsunset = 2026-10-01\n",
            "[v2]\ndeprecated = 2026-11-01\nsuccessor = \"v1\"\n",
            "[v1]\ndeprecated = 2026-11-01\nsucessor = \"v2\"\n",
            "[v1]\n",
        ];
        for text in refused {
            assert!(
                Versions::parse(text, &served()).is_err(),
                "accepted: {text}"
            );
        }
    }

    #[test]
    fn the_committed_policy_is_valid_for_any_served_versions() {
        let served: Vec<String> = (1..=20).map(|n| format!("v{n}")).collect();
        Versions::parse(POLICY, &served).unwrap();
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }
}
