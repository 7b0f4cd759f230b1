//! Finds an object key that a JSON document names twice.
//!
//! serde_json keeps the last of two equal keys without a word, so
//! `{"name":"a","name":"b"}` reaches a handler as "b" while a proxy, a log
//! or a client library that kept the first saw "a": two readers of one
//! request that disagree. serde_json has no option to refuse them and no
//! crate does it for serde_json, so the walk is written here, small: a
//! serde visitor over the document that keeps one set of keys per object
//! and stops at the first repeat.
//!
//! It is bounded by what it is given: it runs on a body already capped at
//! `MAX_BODY_BYTES`, the keys it holds are at most that many bytes, and its
//! depth is serde_json's recursion limit (128 nested arrays or objects),
//! past which the walk gives up. A document it cannot read (too deep, or not
//! JSON) is left to the handler's own parser, which refuses it the same way.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

/// The first key named twice in one object of `body`, at any depth, keys
/// compared once their escapes are decoded (`"a"` and `"\u0061"` are one
/// key). `None` if every object's keys are distinct, or if `body` stops
/// being JSON that serde_json reads before any repeat.
pub(crate) fn duplicate_key(body: &[u8]) -> Option<String> {
    let mut found = None;
    let mut document = serde_json::Deserializer::from_slice(body);
    // An error is either the repeat, recorded in `found`, or a document
    // the handler's parser refuses anyway.
    let _ = Walk { found: &mut found }.deserialize(&mut document);
    found
}

/// One value of the document, and the place to record a repeated key.
struct Walk<'a> {
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items
            .next_element_seed(Walk {
                found: &mut *self.found,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        // serde_json decodes a key's escapes before handing it over.
        while let Some(key) = entries.next_key::<String>()? {
            if keys.contains(&key) {
                *self.found = Some(key);
                return Err(A::Error::custom("a key named twice"));
            }
            keys.insert(key);
            entries.next_value_seed(Walk {
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn repeat(body: &str) -> Option<String> {
        duplicate_key(body.as_bytes())
    }

    #[test]
    fn distinct_keys_pass() {
        for body in [
            r#"{"name":"a","role":"b"}"#,
            r#"{"a":{"a":{"a":1}}}"#,
            r#"[{"a":1},{"a":2}]"#,
            r#"{"a":[{"b":1},{"b":2}],"b":{"a":null}}"#,
            r#""a string""#,
            "[]",
            "{}",
            "7",
        ] {
            assert_eq!(repeat(body), None, "{body}");
        }
    }

    #[test]
    fn a_repeat_at_the_top_is_named() {
        assert_eq!(
            repeat(r#"{"name":"a","name":"b","x":1}"#),
            Some("name".into())
        );
    }

    #[test]
    fn a_repeat_in_a_nested_object_is_named() {
        assert_eq!(
            repeat(r#"{"outer":{"inner":{"k":1,"k":2}}}"#),
            Some("k".into())
        );
    }

    #[test]
    fn a_repeat_in_an_object_inside_an_array_is_named() {
        assert_eq!(
            repeat(r#"{"items":[1,{"ok":true},[{"id":1,"id":1}]]}"#),
            Some("id".into())
        );
    }

    #[test]
    fn keys_equal_once_unescaped_are_the_same_key() {
        assert_eq!(repeat(r#"{"a":1,"\u0061":2}"#), Some("a".into()));
        assert_eq!(repeat(r#"{"n\u0061me":1,"name":2}"#), Some("name".into()));
        assert_eq!(repeat(r#"{"\/":1,"/":2}"#), Some("/".into()));
    }

    #[test]
    fn keys_that_differ_only_in_case_or_in_normalisation_are_distinct() {
        assert_eq!(repeat(r#"{"a":1,"A":2}"#), None);
        assert_eq!(repeat("{\"\u{e9}\":1,\"e\u{301}\":2}"), None);
    }

    #[test]
    fn what_is_not_json_is_left_to_the_parser() {
        for body in ["", "not json", r#"{"a":1,"b""#, "{\"a\":1}}", "\u{feff}{}"] {
            assert_eq!(repeat(body), None, "{body:?}");
        }
    }

    #[test]
    fn a_repeat_within_the_recursion_limit_is_found() {
        let depth = 120;
        let body = format!(
            "{}{{\"k\":1,\"k\":2}}{}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(repeat(&body), Some("k".into()));
    }

    /// Past serde_json's recursion limit the walk stops instead of
    /// overflowing the stack; the handler's parser refuses such a body.
    #[test]
    fn a_document_past_the_recursion_limit_stops_the_walk() {
        let depth = 100_000;
        let body = format!("{}{}", "[{\"k\":".repeat(depth), "1}]".repeat(depth));
        assert_eq!(repeat(&body), None);
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    }

    proptest! {
        /// Any bytes at all: an answer, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = duplicate_key(&body);
        }

        /// JSON-shaped text, with few distinct keys so that repeats are
        /// common: never a panic, and a key named twice is always found.
        #[test]
        fn json_like_text_never_panics_and_repeats_are_found(
            body in r#"[\[\]{}:,"ab\\u0061 1]{0,80}"#,
            keys in prop::collection::vec("[ab]", 1..6),
        ) {
            let _ = duplicate_key(body.as_bytes());
            let object = keys
                .iter()
                .map(|key| format!("\"{key}\":0"))
                .collect::<Vec<_>>()
                .join(",");
            let repeated = keys.len() != keys.iter().collect::<HashSet<_>>().len();
            let found = duplicate_key(format!("[{{{object}}}]").as_bytes());
            prop_assert_eq!(found.is_some(), repeated);
        }
    }
}
