//! The fuzz target of sign-in's request bodies (`fuzz/`, `make fuzz`):
//! arbitrary bytes as the JSON body of each request type, through
//! poem-openapi's parser and its validators, then into the domain types,
//! asserting what the schema and the domain promise. Built only with the
//! `fuzzing` feature (and for the unit tests).

use poem_openapi::types::ParseFromJSON;
use serde_json::Value;

use super::admin::SetRoleRequest;
use super::login::LoginRequest;
use super::profile::{ChangePasswordRequest, SetNameRequest};
use crate::modules::auth::domain::{broken_promise, DisplayName, NewPassword, Username};
use crate::requests::json_keys;

pub fn request_bodies(data: &[u8]) {
    // What the middleware runs first, on the raw body.
    let _ = json_keys::duplicate_key(data);
    let text = String::from_utf8_lossy(data);
    domain(&text);
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let known = |names: &[&str]| {
        body.as_object()
            .is_some_and(|fields| fields.keys().all(|key| names.contains(&key.as_str())))
    };
    if let Ok(request) = LoginRequest::parse_from_json(Some(body.clone())) {
        assert!(known(&["username", "password"]));
        let username = request.username.as_str();
        assert!((1..=64).contains(&username.chars().count()), "{username:?}");
        assert!(!username.chars().any(|c| c <= '\u{1F}' || c == '\u{7F}'));
        assert!((1..=1024).contains(&request.password.as_str().chars().count()));
    }
    if let Ok(request) = SetNameRequest::parse_from_json(Some(body.clone())) {
        assert!(known(&["name"]));
        assert!((1..=100).contains(&request.name.as_str().chars().count()));
        domain(request.name.as_str());
    }
    if let Ok(request) = ChangePasswordRequest::parse_from_json(Some(body.clone())) {
        assert!(known(&["current_password", "new_password"]));
        // What the schema lets through, the domain takes.
        let new = request.new_password.into_string();
        assert!(NewPassword::parse(new.clone()).is_ok(), "{new:?}");
    }
    if let Ok(request) = SetRoleRequest::parse_from_json(Some(body.clone())) {
        assert!(known(&["role"]));
        assert!(matches!(body["role"].as_str(), Some("user" | "admin")));
        assert_eq!(body["role"], request.role.as_str());
    }
}

/// The domain's parsers on any text: an accepted name keeps every promise
/// the property tests assert, an accepted username is the constraint's.
fn domain(text: &str) {
    if let Ok(name) = DisplayName::parse(text) {
        assert_eq!(broken_promise(name.as_str()), None, "{name:?}");
    }
    if let Ok(username) = Username::parse(text) {
        let username = username.as_str();
        assert!((3..=32).contains(&username.len()));
        assert!(username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    }
    let chars = text.chars().count();
    let accepted = NewPassword::parse(text.to_owned()).is_ok();
    assert_eq!(accepted, (8..=1024).contains(&chars));
}

#[cfg(test)]
mod tests {
    /// The seed corpus (fuzz/corpus/), every input that once failed among
    /// it, passes on the stable toolchain too.
    #[test]
    fn the_seed_corpus_passes() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/auth_requests");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{dir:?}: {err}"));
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            super::request_bodies(&std::fs::read(&path).expect("readable"));
        }
    }
}
