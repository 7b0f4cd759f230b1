//! Sign-in's values, parsed once at the edge (HTTP or the command line) so
//! that the code behind works with values that keep the rules.

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name must be at most {} characters", DisplayName::MAX_CHARS)]
    TooLong,
    #[error("name must not contain control characters")]
    Control,
}

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(NameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        Ok(DisplayName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new account's username: 3 to 32 ASCII letters, digits, `_`, `.` or
/// `-` (the `users_username_format` constraint in `init.sql`). Logins look
/// up any string, so that a malformed one costs what an unknown one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("usernames are 3 to 32 letters, digits, '_', '.' or '-'")]
pub struct UsernameError;

impl Username {
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if (3..=32).contains(&raw.len()) && raw.chars().all(allowed) {
            Ok(Username(raw.to_owned()))
        } else {
            Err(UsernameError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password being set: 8 to 1024 characters (what the API's schema says
/// too), never printed.
pub struct NewPassword(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password must be at least {} characters", NewPassword::MIN_CHARS)]
    TooShort,
    #[error("the password must be at most {} characters", NewPassword::MAX_CHARS)]
    TooLong,
}

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 1024;

    pub fn parse(raw: String) -> Result<Self, PasswordError> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > Self::MAX_CHARS {
            return Err(PasswordError::TooLong);
        }
        Ok(NewPassword(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn display_names_never_panic_and_keep_their_promises(raw in "\\PC{0,120}|.{0,120}") {
            if let Ok(name) = DisplayName::parse(&raw) {
                let name = name.as_str();
                prop_assert!((1..=DisplayName::MAX_CHARS).contains(&name.chars().count()));
                prop_assert!(!name.chars().any(char::is_control));
                prop_assert_eq!(name.trim(), name);
            }
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let parse = |raw: &str| DisplayName::parse(raw).map(|name| name.as_str().to_owned());
        assert_eq!(parse("  Ada Lovelace \n").unwrap(), "Ada Lovelace");
        assert_eq!(parse(&"é".repeat(100)).unwrap().chars().count(), 100);
        for bad in ["", "   ", "a\u{0}b", "tab\there", "del\u{7f}", "c1\u{85}x"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse(&"x".repeat(101)), Err(NameError::TooLong));
    }

    #[test]
    fn usernames_follow_the_schema_constraint() {
        for good in ["ada", "ada.lovelace", "a_b-c", &"x".repeat(32)] {
            assert!(Username::parse(good).is_ok(), "{good:?} was refused");
        }
        for bad in ["ab", &"x".repeat(33), "ada lovelace", "adá", "a/b", ""] {
            assert_eq!(Username::parse(bad), Err(UsernameError), "{bad:?}");
        }
    }

    #[test]
    fn new_passwords_are_bounded_and_never_printed() {
        assert_eq!(
            NewPassword::parse("short".into()).unwrap_err(),
            PasswordError::TooShort
        );
        assert_eq!(
            NewPassword::parse("é".repeat(1025)).unwrap_err(),
            PasswordError::TooLong
        );
        let password = NewPassword::parse("correct horse".into()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
