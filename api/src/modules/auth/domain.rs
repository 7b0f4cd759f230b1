//! Sign-in's values, parsed once at the edge (HTTP or the command line) so
//! that the code behind works with values that keep the rules.

/// A display name: trimmed, 1 to 100 characters, no control characters,
/// and visible (see [`DisplayName::parse`]).
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
    #[error(
        "name must be visible: no invisible, text-direction or line-separator \
         characters, but for the joiners and selectors inside an emoji"
    )]
    Invisible,
}

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    /// A name is what others see of a user, so it must show: it may not be
    /// blank to the eye (`"\u{200B}\u{200B}"`) nor read otherwise than it
    /// is stored (`"abc\u{202E}gpj.exe"` shows as `abcexe.jpg`). Visible
    /// means every character is one of:
    /// - a visible character: not whitespace, not a control character, not
    ///   Unicode's Default_Ignorable_Code_Point (which holds every
    ///   text-direction control, so those are refused anywhere);
    /// - whitespace, but for the line and paragraph separators (U+2028,
    ///   U+2029), and never at either end (trimmed);
    /// - one of the ignorable characters emoji sequences are built with,
    ///   attached to a visible character: a variation selector right after
    ///   one (`❤️`), a tag after one or after another tag (a subdivision
    ///   flag), a zero-width joiner or non-joiner right after one or after
    ///   such a selector or tag (`👨‍👩‍👧`, `🏳️‍🌈`, Persian's ZWNJ).
    ///
    /// A name is never whitespace or attached characters alone, so its
    /// first character, and so at least one, is visible.
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
        let mut previous = Shown::Space;
        for c in name.chars() {
            let shown = Shown::of(c);
            let attached = match shown {
                Shown::Visible | Shown::Space => true,
                Shown::Mark => matches!(previous, Shown::Visible | Shown::Mark),
                Shown::Selector => previous == Shown::Visible,
                Shown::Tag => matches!(previous, Shown::Visible | Shown::Tag),
                Shown::Joiner => {
                    matches!(previous, Shown::Visible | Shown::Selector | Shown::Tag)
                }
                Shown::Hidden => false,
            };
            if !attached {
                return Err(NameError::Invisible);
            }
            previous = shown;
        }
        Ok(DisplayName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a character of a name shows (see [`DisplayName::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Visible,
    Space,
    /// ZWJ or ZWNJ, which join or part the characters either side.
    Joiner,
    /// A variation selector, which picks how the character before it looks.
    Selector,
    /// A tag character, which spells a subdivision flag after 🏴.
    Tag,
    /// A combining mark (an accent), which shows only on the character
    /// before it.
    Mark,
    /// Nothing to see, or text that shows other than it is stored.
    Hidden,
}

impl Shown {
    fn of(c: char) -> Shown {
        match c {
            '\u{200C}' | '\u{200D}' => Shown::Joiner,
            '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' => Shown::Selector,
            '\u{E0020}'..='\u{E007F}' => Shown::Tag,
            // They end a line wherever they are, in a one-line field.
            '\u{2028}' | '\u{2029}' => Shown::Hidden,
            // Braille's blank pattern: a printable character that shows
            // nothing.
            '\u{2800}' => Shown::Hidden,
            // Before the marks: U+034F, among them, shows nothing at all.
            c if is_default_ignorable(c) => Shown::Hidden,
            '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}' => Shown::Mark,
            c if c.is_whitespace() => Shown::Space,
            _ => Shown::Visible,
        }
    }
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt):
/// characters a renderer shows as nothing. The text-direction controls
/// (Bidi_Control: U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
/// U+2069) are all among them.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
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

/// What an accepted name promises, written out apart from the parser, for
/// the property tests here and at the HTTP edge, and the fuzz target: the
/// promise it breaks.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn broken_promise(name: &str) -> Option<&'static str> {
    let chars: Vec<char> = name.chars().collect();
    let bidi = |c: char| {
        matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
    };
    let emoji_part = |c: char| {
        matches!(
            c,
            '\u{200C}'
                | '\u{200D}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{E0020}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
    };
    if !(1..=DisplayName::MAX_CHARS).contains(&chars.len()) {
        return Some("1 to 100 characters");
    }
    if name.trim() != name {
        return Some("trimmed");
    }
    if chars.iter().any(|c| c.is_control()) {
        return Some("no control character");
    }
    if chars.iter().any(|&c| bidi(c)) {
        return Some("no text-direction control");
    }
    if chars.iter().any(|&c| matches!(c, '\u{2028}' | '\u{2029}')) {
        return Some("no line or paragraph separator");
    }
    if is_default_ignorable(chars[0]) {
        return Some("a visible first character");
    }
    for (at, &c) in chars.iter().enumerate().skip(1) {
        if is_default_ignorable(c) && (!emoji_part(c) || chars[at - 1].is_whitespace()) {
            return Some("invisible characters only as parts of an emoji");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Text made of the characters the visibility rule is about, mixed
    /// with visible ones and spaces.
    const MIXED: &str = "[a\u{0634} \u{00A0}\u{1F468}\u{1F3F4}\u{2764}\u{20E3}\
        \u{200D}\u{200C}\u{FE0F}\u{E0100}\u{E0067}\u{E007F}\u{E0001}\
        \u{200B}\u{200E}\u{202E}\u{2066}\u{061C}\u{00AD}\u{3164}\u{FEFF}\u{2028}\u{2029}]{0,12}";

    proptest! {
        #[test]
        fn display_names_never_panic_and_keep_their_promises(raw in "\\PC{0,120}|.{0,120}") {
            if let Ok(name) = DisplayName::parse(&raw) {
                prop_assert_eq!(broken_promise(name.as_str()), None, "{:?}", name);
            }
        }

        /// Names made mostly of the characters the visibility rule is
        /// about: never a panic, and what is accepted keeps the promises.
        #[test]
        fn names_of_invisible_and_joining_characters_keep_their_promises(raw in MIXED) {
            if let Ok(name) = DisplayName::parse(&raw) {
                prop_assert_eq!(broken_promise(name.as_str()), None, "{:?}", name);
            }
        }
    }

    #[test]
    fn invisible_names_are_refused() {
        for bad in [
            "\u{200B}\u{200B}",
            "abc\u{202E}gpj.exe",
            "\u{200D}",
            "  \u{200D}  ",
            "a \u{200D}",
            "a\u{200D}\u{200D}b",
            "\u{FE0F}a",
            "a\u{FE0F}\u{FE0F}",
            "\u{2066}Ada\u{2069}",
            "Ada\u{200E}",
            "\u{3164}",
            "\u{FEFF}Ada",
            "Ada\u{00AD}",
            "line\u{2028}separator",
            "para\u{2029}graph",
            "\u{E0067}\u{E007F}",
            "a\u{E0001}",
        ] {
            assert_eq!(
                DisplayName::parse(bad),
                Err(NameError::Invisible),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn emoji_sequences_and_joined_scripts_are_visible() {
        for good in [
            "Ada Lovelace",
            // Man, woman, girl: two zero-width joiners.
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
            // A rainbow flag: white flag, variation selector, joiner, rainbow.
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
            // A red heart as an emoji.
            "\u{2764}\u{FE0F}",
            // Scotland's flag: black flag, tags "gbsct", cancel tag.
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            // Persian "I want", with a zero-width non-joiner inside.
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
            "Ada\u{00A0}Lovelace",
            "a\u{E0100}",
        ] {
            let name = DisplayName::parse(good).map(|name| name.as_str().to_owned());
            assert_eq!(name.as_deref(), Ok(good), "{good:?}");
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

    #[test]
    fn blank_patterns_and_marks_on_nothing_do_not_show() {
        for hidden in [
            "\u{2800}",
            "\u{2800}\u{2800}",
            "\u{0301}",
            "\u{0301}abc",
            " \u{20DD}",
        ] {
            assert_eq!(
                DisplayName::parse(hidden),
                Err(NameError::Invisible),
                "{hidden:?}"
            );
        }
        // U+034F is a mark by its block, and shows nothing.
        assert_eq!(DisplayName::parse("a\u{034F}"), Err(NameError::Invisible));
        for shown in ["e\u{0301}", "Zoe\u{0308}", "a\u{0301}\u{0323}"] {
            assert!(DisplayName::parse(shown).is_ok(), "{shown:?}");
        }
    }
}
