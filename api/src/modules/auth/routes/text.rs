//! Request strings: a [`Text`] must be a JSON string (poem-openapi's
//! `String` also accepts numbers and booleans, so `{"name": 7}` would store
//! "7" and let ill-typed bodies through the contract), and may have to keep
//! a [`Rule`], which the schema documents as its `pattern`.
//!
//! The rules are written out in code rather than given to poem-openapi's
//! `pattern` validator because that validator compiles its regular
//! expression again on every check: 43 µs for the display name's, 27 µs
//! for the others', on each request that carries one (poem-openapi 5.1).
//! The tests hold each rule to its pattern, both ways.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use serde_json::Value;

/// What a request string must be, beyond a string.
pub trait Rule: Send + Sync + 'static {
    /// What a 400 says failed to parse. A parse error (unlike a validator's)
    /// names the body but not the field, so this says what kind of field it
    /// was: `failed to parse "display name": verification failed.
    /// pattern(...) (occurred while parsing "SetNameRequest")`. The rule is
    /// checked before `min_length` and `max_length`, so an empty name fails
    /// on its pattern.
    const NAME: &'static str;
    /// The schema's `pattern`, which [`Rule::allows`] must agree with.
    const PATTERN: Option<&'static str>;

    fn allows(text: &str) -> bool;
}

/// Any string: passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Any {}

impl Rule for Any {
    const NAME: &'static str = "string";
    const PATTERN: Option<&'static str> = None;

    fn allows(_: &str) -> bool {
        true
    }
}

/// No C0 control character and no DEL: usernames, searches, cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoControl {}

impl Rule for NoControl {
    const NAME: &'static str = "text without control characters";
    const PATTERN: Option<&'static str> = Some(r"^[^\x00-\x1F\x7F]*$");

    fn allows(text: &str) -> bool {
        // Each of these is one byte in UTF-8, and no byte of a longer
        // character is below 0x80.
        text.bytes().all(|byte| byte > 0x1F && byte != 0x7F)
    }
}

/// No control character at all (C0, DEL or C1), and one that is not
/// whitespace: display names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotBlank {}

impl Rule for NotBlank {
    const NAME: &'static str = "display name";
    const PATTERN: Option<&'static str> =
        Some(r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$");

    fn allows(text: &str) -> bool {
        // `is_control` is Unicode's Cc, exactly the pattern's three ranges;
        // `is_whitespace` is White_Space, as the pattern's `\s`.
        !text.chars().any(char::is_control) && text.chars().any(|c| !c.is_whitespace())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<R: Rule = Any>(String, PhantomData<R>);

impl<R: Rule> Text<R> {
    fn new(text: String) -> Self {
        Text(text, PhantomData)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    fn parse(text: String) -> ParseResult<Self> {
        if R::allows(&text) {
            return Ok(Text::new(text));
        }
        Err(ParseError::custom(format!(
            "verification failed. pattern(\"{}\")",
            R::PATTERN.unwrap_or_default()
        )))
    }
}

impl<R: Rule> Type for Text<R> {
    const IS_REQUIRED: bool = true;
    // Validators (min_length, max_length) see the inner String.
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        R::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("string");
        schema.pattern = R::PATTERN.map(str::to_owned);
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<R: Rule> ParseFromJSON for Text<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Self::parse(text),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl<R: Rule> ParseFromParameter for Text<R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value.to_owned())
    }
}

impl<R: Rule> ToJSON for Text<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    #[test]
    fn only_json_strings_parse() {
        let parse = |v: Value| Text::<Any>::parse_from_json(Some(v)).ok();
        assert_eq!(parse(Value::from("x")), Some(Text::new("x".into())));
        assert_eq!(parse(Value::from(7)), None);
        assert_eq!(parse(Value::from(true)), None);
        assert_eq!(parse(Value::Null), None);
        assert!(Text::<Any>::parse_from_json(None).is_err());
    }

    #[test]
    fn a_string_against_the_rule_is_refused_from_json_and_from_a_query() {
        let json = |s: &str| Text::<NoControl>::parse_from_json(Some(Value::from(s))).is_ok();
        let query = |s: &str| Text::<NotBlank>::parse_from_parameter(s).is_ok();
        assert!(json("alice") && !json("al\u{7}ice"));
        assert!(query(" Ada ") && !query("   ") && !query("A\u{85}da"));
    }

    #[test]
    fn the_schema_documents_the_rule_s_pattern() {
        let pattern = |schema: MetaSchemaRef| match schema {
            MetaSchemaRef::Inline(schema) => (schema.ty, schema.pattern),
            MetaSchemaRef::Reference(name) => panic!("a reference to {name}"),
        };
        assert_eq!(pattern(Text::<Any>::schema_ref()), ("string", None));
        assert_eq!(
            pattern(Text::<NotBlank>::schema_ref()),
            ("string", NotBlank::PATTERN.map(str::to_owned))
        );
    }

    /// Strings made of what the patterns are about: controls of each kind,
    /// whitespace of each kind, and ordinary characters. (`any::<String>()`
    /// would never try a control character.)
    fn edgy() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            '\u{0}', '\u{9}', '\n', '\u{1F}', ' ', 'a', '\u{7E}', '\u{7F}', '\u{80}', '\u{85}',
            '\u{9F}', '\u{A0}', 'é', '\u{2028}', '\u{3000}', '\u{200B}', '😀',
        ]);
        prop::collection::vec(chars, 0..6).prop_map(String::from_iter)
    }

    fn agrees<R: Rule>(text: &str) -> Result<(), TestCaseError> {
        let pattern = R::PATTERN.expect("a rule with a pattern");
        let regex = Regex::new(pattern).expect("the pattern compiles");
        prop_assert_eq!(
            R::allows(text),
            regex.is_match(text),
            "{:?} and {}",
            text,
            pattern
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn each_rule_allows_exactly_what_its_pattern_matches(text in edgy()) {
            agrees::<NoControl>(&text)?;
            agrees::<NotBlank>(&text)?;
        }

        #[test]
        fn each_rule_allows_exactly_what_its_pattern_matches_in_any_text(
            text in prop::collection::vec(any::<char>(), 0..16).prop_map(String::from_iter)
        ) {
            agrees::<NoControl>(&text)?;
            agrees::<NotBlank>(&text)?;
        }
    }
}
