//! The log line of an event, text or JSON, written straight into the log
//! writer's buffer.
//!
//! tracing-subscriber's own formatters are general, and dear on every
//! request. Its JSON one writes a span's fields out as a JSON object when
//! they are recorded, then, for every line logged inside the span, parses
//! that text back into a map (a string allocated for each key and value)
//! to write it out again. Its text one wraps every field name, `=`, brace
//! and colon in a terminal style, colour on or off, each one more trip
//! through `core::fmt`. Measured with callgrind on one worker
//! (docs/benchmarks.md, round eight), a `GET /v1/hello` took about 116,000
//! instructions of the service's own with JSON lines and 80,000 with text;
//! the line and the request's span were the largest part of either.
//!
//! These write the same lines. The text line is tracing-subscriber's with
//! colour off, byte for byte. The JSON line has its keys and values, but
//! that a span's fields come in the order they were first recorded (not
//! sorted by name), and that an event of the `log` crate leaves out the
//! bridge's `log.*` fields, whose target and level the line already has
//! (so does the text line). The tests below hold both to
//! tracing-subscriber's own. A terminal still gets tracing-subscriber's
//! coloured text (`telemetry::formatted`).

use std::error::Error;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Text lines: `TIME LEVEL span{fields}:child{fields}: target: fields`.
pub(crate) struct TextLine;

/// A span's fields as text: `name=value`, space-separated.
pub(crate) struct TextFields;

/// JSON lines: `{"timestamp", "level", the event's fields, "target",
/// "span": {its fields, "name"}}`, the span being the event's parent or,
/// without one, the span it was logged in.
pub(crate) struct JsonLine;

/// A span's fields as JSON object members, kept without the braces so
/// that a field recorded later is added to them.
pub(crate) struct JsonFields;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` crate (dependencies') name their own level
        // and target, not the bridge's.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_char(' ')?;
        writer.write_str(padded(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        writer.write_char('{')?;
                        writer.write_str(fields)?;
                        writer.write_char('}')?;
                    }
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        record(TextVisitor(Members::new(&mut writer, ' ', true)), event)?;
        writer.write_char('\n')
    }
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        record(TextVisitor(Members::new(&mut writer, ' ', true)), fields)
    }

    // As tracing-subscriber's default: a space, then the fields (none, if
    // only an empty value was recorded).
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if !current.fields.is_empty() {
            current.fields.push(' ');
        }
        record(
            TextVisitor(Members::new(&mut current.fields, ' ', true)),
            fields,
        )
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        record(JsonVisitor(Members::new(&mut writer, ',', false)), event)?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        // The event's parent, or the span it was logged in, as
        // tracing-subscriber picks.
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                if !fields.is_empty() {
                    writer.write_str(fields)?;
                    writer.write_char(',')?;
                }
            }
            writer.write_str("\"name\":")?;
            write_json_str(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        record(JsonVisitor(Members::new(&mut writer, ',', true)), fields)
    }

    /// A field recorded again replaces its value, as in the map
    /// tracing-subscriber keeps, rather than naming its key twice; a value
    /// that failed to format leaves the fields as they were.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Written in place, as most records name a new field (the
        // request's route, on every request); rebuilt only for one named
        // again.
        let before = current.fields.len();
        let written = record(
            JsonVisitor(Members::new(&mut current.fields, ',', before == 0)),
            fields,
        );
        if written.is_err() {
            current.fields.truncate(before);
            return written;
        }
        let (old, new) = current.fields.split_at(before);
        let new = new.strip_prefix(',').unwrap_or(new);
        let again = |key: &str| members(new).any(|(named, _)| named == key);
        // A key named again is in the old members as written, quotes and
        // all, so a substring search rules most records out (walking the
        // old members was a tenth of a JSON line's cost, on every request);
        // a value that happens to hold the key only costs the walk.
        let maybe_again = members(new).any(|(key, _)| old.contains(key));
        if maybe_again && members(old).any(|(key, _)| again(key)) {
            let kept: Vec<&str> = members(old)
                .filter(|(key, _)| !again(key))
                .map(|(_, member)| member)
                .chain(std::iter::once(new))
                .collect();
            current.fields = kept.join(",");
        }
        Ok(())
    }
}

/// The members `JsonFields` wrote (`"key":value,...`), each as its key
/// (quoted, as written) and the whole member. Values are strings, numbers,
/// booleans or `null`, so a member ends at the first comma outside a
/// string.
fn members(fields: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = fields;
    std::iter::from_fn(move || {
        let key = rest.get(..string_end(rest)?)?;
        let value = rest.get(key.len() + 1..)?;
        let value_len = if value.starts_with('"') {
            string_end(value)?
        } else {
            value.find(',').unwrap_or(value.len())
        };
        let member = rest.get(..key.len() + 1 + value_len)?;
        rest = rest.get(member.len()..)?;
        rest = rest.strip_prefix(',').unwrap_or(rest);
        Some((key, member))
    })
}

/// The length of the JSON string `text` starts with, quotes included.
fn string_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut at = 1;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// Records `fields` with `visitor`; whether all were written.
fn record<'a, V>(mut visitor: V, fields: impl RecordFields) -> fmt::Result
where
    V: Visit + AsMut<Members<'a>>,
{
    fields.record(&mut visitor);
    visitor.as_mut().result
}

/// The level as tracing-subscriber pads it, five characters wide.
fn padded(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// What both kinds of fields share: where they go, the separator written
/// before each but the first, and whether every write succeeded.
struct Members<'a> {
    out: &'a mut dyn fmt::Write,
    separator: char,
    first: bool,
    result: fmt::Result,
}

impl<'a> Members<'a> {
    fn new(out: &'a mut dyn fmt::Write, separator: char, first: bool) -> Self {
        Members {
            out,
            separator,
            first,
            result: Ok(()),
        }
    }

    /// Writes one field with `write` (given the name to write), after the
    /// separator. A field of the log bridge's own (`log.target`, ...) is
    /// no field, and a raw identifier loses its `r#`.
    fn write(
        &mut self,
        field: &Field,
        write: impl FnOnce(&mut dyn fmt::Write, &str) -> fmt::Result,
    ) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let first = std::mem::replace(&mut self.first, false);
        let out = &mut *self.out;
        self.result = if first {
            write(out, name)
        } else {
            out.write_char(self.separator)
                .and_then(|()| write(out, name))
        };
    }
}

/// Fields as tracing-subscriber's `DefaultFields` writes them with colour
/// off: `name=value` with the value's `Debug` (so a string is quoted), the
/// message bare, with terminal control characters escaped.
struct TextVisitor<'a>(Members<'a>);

impl<'a> AsMut<Members<'a>> for TextVisitor<'a> {
    fn as_mut(&mut self) -> &mut Members<'a> {
        &mut self.0
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        let error = Sanitized(format_args!("{value}"));
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!("{error} {}.sources={}", field.name(), Sources(source)),
            ),
            None => self.record_debug(field, &format_args!("{error}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let message = field.name() == "message";
        self.0.write(field, |out, name| {
            if message {
                return write!(out, "{:?}", Sanitized(value));
            }
            out.write_str(name)?;
            out.write_char('=')?;
            write!(out, "{value:?}")
        });
    }
}

/// Fields as JSON object members, as tracing-subscriber's JSON format has
/// them: numbers and booleans as such (a float that is not finite as
/// `null`), everything else a string of its `Debug`.
struct JsonVisitor<'a>(Members<'a>);

impl<'a> AsMut<Members<'a>> for JsonVisitor<'a> {
    fn as_mut(&mut self) -> &mut Members<'a> {
        &mut self.0
    }
}

impl JsonVisitor<'_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        self.0.write(field, |out, name| {
            write_json_str(out, name)?;
            out.write_char(':')?;
            value(out)
        });
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| {
            if value.is_finite() {
                // `Debug` is the shortest text that reads back as the same
                // number (`1e-5`, `0.25`, `3.0`, `1e16`): valid JSON.
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_json_str(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(JsonEscaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn write_json_str(out: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscaping(out).write_str(text)?;
    out.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string, as
/// serde_json escapes it: the quote, the backslash and control characters.
struct JsonEscaping<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for JsonEscaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Most text has nothing to escape. Looking at every byte, not
        // stopping at the first that needs it, lets the compiler compare
        // many bytes at once: byte by byte, the loop below was a JSON
        // line's largest cost of its own.
        if !text.bytes().fold(false, |any, byte| any | escaped(byte)) {
            return self.0.write_str(text);
        }
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// Whether serde_json escapes `byte` inside a string.
fn escaped(byte: u8) -> bool {
    matches!(byte, b'"' | b'\\' | 0..=0x1f)
}

/// A message's text with the characters a terminal acts on escaped, as
/// tracing-subscriber does (a logged value cannot drive the terminal of
/// whoever reads the log).
struct Sanitized<T>(T);

impl<T: fmt::Debug> fmt::Debug for Sanitized<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(TerminalEscaping(f), "{:?}", self.0)
    }
}

impl<T: fmt::Display> fmt::Display for Sanitized<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(TerminalEscaping(f), "{}", self.0)
    }
}

struct TerminalEscaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for TerminalEscaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for ch in text.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// An error's causes, `[first, second]`, as tracing-subscriber lists them.
struct Sources<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut cause = Some(self.0);
        while let Some(error) = cause {
            list.entry(&Sanitized(format_args!("{error}")));
            cause = error.source();
        }
        list.finish()
    }
}

/// `now` in UTC as RFC 3339 with microseconds (`2026-11-30T14:26:24.287397Z`),
/// as tracing-subscriber writes it.
fn write_timestamp(out: &mut dyn fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], of_day / 3600);
    put_digits(&mut text[14..16], of_day / 60 % 60);
    put_digits(&mut text[17..19], of_day % 60);
    put_digits(&mut text[20..26], u64::from(since.subsec_micros()));
    out.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// `value`'s last `into.len()` decimal digits into `into`.
fn put_digits(into: &mut [u8], mut value: u64) {
    for digit in into.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The (year, month, day) `days` after 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`; eras of 400
/// years, counted from 0000-03-01).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let of_era = shifted % 146_097;
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * of_year + 2) / 153;
    let day = of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[derive(Debug)]
    struct Failure {
        cause: Option<Box<Failure>>,
        text: &'static str,
    }

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.text)
        }
    }

    impl Error for Failure {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.cause
                .as_deref()
                .map(|cause| cause as &(dyn Error + 'static))
        }
    }

    /// Every kind of field, span and event the service logs, and the odd
    /// ones a dependency might: what both formatters are given.
    fn log_everything() {
        let failure = Failure {
            text: "cannot save",
            cause: Some(Box::new(Failure {
                text: "pool timed out",
                cause: Some(Box::new(Failure {
                    text: "connection \x1b[31mrefused",
                    cause: None,
                })),
            })),
        };
        let alone = Failure {
            text: "plain \u{85}failure",
            cause: None,
        };
        tracing::info!("no span, no fields");
        tracing::warn!(count = 3_u64, "no span: \"quoted\"\n\x1b[2J");
        let request = tracing::info_span!(
            "request",
            request_id = %"0123abcd",
            client_ip = Some(tracing::field::display("127.0.0.1")),
            method = %"GET",
            path = %"/v1/hello",
            route = tracing::field::Empty,
            user_id = tracing::field::Empty,
        );
        request.in_scope(|| {
            tracing::info!(status = 200_u16, elapsed_ms = 0.25_f64, "answered");
            tracing::Span::current().record("route", "/v1/hello");
            tracing::Span::current().record("user_id", 42_i64);
            tracing::error!(error = &failure as &(dyn Error + 'static), "request failed");
            tracing::error!(error = &alone as &(dyn Error + 'static), "request failed");
            let inner = tracing::info_span!("inner", r#type = "nested", ok = true);
            inner.in_scope(|| {
                tracing::debug!(
                    big = u64::MAX,
                    negative = -7_i64,
                    tiny = 1e-9_f64,
                    huge = 1.5e300_f64,
                    whole = 3.0_f64,
                    nan = f64::NAN,
                    text = "tab\there \"and\" back\\slash \u{1}",
                    debug = ?vec!["a", "b"],
                    shown = %"display\nnewline",
                    "inside two spans"
                );
            });
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::trace!("in a span without fields"));
            tracing::info!(parent: None, "a root event logged inside a span");
        });
        // Fields recorded after the span began: one twice, one with no value,
        // and one whose key, quoted, is in another's value already.
        let later = tracing::info_span!(
            "later",
            a = 1_u64,
            holds = "x\"b",
            b = tracing::field::Empty,
            c = tracing::field::Empty
        );
        later.record("b", "first");
        later.record("b", "second");
        later.record("c", None::<u64>);
        later.in_scope(|| tracing::info!("after the records"));
        tracing::info!(message = "message as a field", after = "it");
    }

    fn both(
        ours: impl tracing::Subscriber + Send + Sync,
        theirs: impl tracing::Subscriber + Send + Sync,
    ) {
        tracing::subscriber::with_default(ours, log_everything);
        tracing::subscriber::with_default(theirs, log_everything);
    }

    /// The line without its timestamp (the two were written at different
    /// moments); a line a logged newline started has none.
    fn untimed(line: &str) -> &str {
        match line.split_once(' ') {
            Some((time, rest)) if time.len() == 27 && time.ends_with('Z') => rest,
            _ => line,
        }
    }

    #[test]
    fn text_lines_are_tracing_subscribers_without_colour() {
        let (ours, theirs) = (Captured::default(), Captured::default());
        both(
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(ours.clone())
                    .fmt_fields(TextFields)
                    .event_format(TextLine)
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
            ),
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(theirs.clone())
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
            ),
        );
        let (ours, theirs) = (ours.lines(), theirs.lines());
        // Ten events, two of them with a newline in a value.
        assert_eq!(ours.len(), 12);
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            assert_eq!(untimed(ours), untimed(theirs));
        }
        assert!(ours[2].contains("\\x1b[2J"), "{}", ours[2]);
    }

    #[test]
    fn json_lines_have_tracing_subscribers_keys_and_values() {
        let (ours, theirs) = (Captured::default(), Captured::default());
        both(
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_writer(ours.clone())
                    .fmt_fields(JsonFields)
                    .event_format(JsonLine)
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
            ),
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_span_list(false)
                    .with_writer(theirs.clone())
                    .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
            ),
        );
        let (ours, theirs) = (ours.lines(), theirs.lines());
        assert_eq!(ours.len(), 10);
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            // Compared as values below, which would hide a key named twice.
            let twice = crate::requests::json_keys::duplicate_key(ours.as_bytes());
            assert_eq!(twice, None, "{ours}");
            let mut ours: Value =
                serde_json::from_str(ours).unwrap_or_else(|err| panic!("{err}: {ours}"));
            let mut theirs: Value = serde_json::from_str(theirs).unwrap();
            assert!(ours["timestamp"].is_string());
            ours["timestamp"] = Value::Null;
            theirs["timestamp"] = Value::Null;
            assert_eq!(ours, theirs);
        }
    }

    /// A value whose `Debug` fails after writing part of itself.
    struct HalfWritten;

    impl fmt::Debug for HalfWritten {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("half")?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn a_json_value_that_fails_to_format_leaves_the_span_valid() {
        let json = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(json.clone())
                .fmt_fields(JsonFields)
                .event_format(JsonLine),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("s", a = 1_u64, b = tracing::field::Empty);
            span.record("b", tracing::field::debug(HalfWritten));
            span.in_scope(|| tracing::info!("after"));
        });
        let line = &json.lines()[0];
        let line: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert_eq!(line["span"], serde_json::json!({"a": 1, "name": "s"}));
    }

    #[test]
    fn events_from_the_log_crate_name_their_own_target_and_level() {
        let (text, json) = (Captured::default(), Captured::default());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(text.clone())
                    .fmt_fields(TextFields)
                    .event_format(TextLine),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(json.clone())
                    .fmt_fields(JsonFields)
                    .event_format(JsonLine),
            );
        tracing::subscriber::with_default(subscriber, || {
            let record = log::Record::builder()
                .args(format_args!("NOTICE: relation exists"))
                .level(log::Level::Warn)
                .target("tokio_postgres::connection")
                .module_path_static(Some("tokio_postgres::connection"))
                .file_static(Some("src/connection.rs"))
                .line(Some(7))
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        assert_eq!(
            untimed(&text.lines()[0]),
            " WARN tokio_postgres::connection: NOTICE: relation exists"
        );
        let json: Value = serde_json::from_str(&json.lines()[0]).unwrap();
        assert_eq!(json["level"], "WARN");
        assert_eq!(json["target"], "tokio_postgres::connection");
        assert_eq!(json["message"], "NOTICE: relation exists");
        assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 0, "2000-02-29T00:00:00.000000Z"),
            (1_709_164_800, 500_000, "2024-02-29T00:00:00.500000Z"),
            (1_796_000_000, 123_456, "2026-11-30T00:53:20.123456Z"),
            (4_102_444_799, 999_999, "2099-12-31T23:59:59.999999Z"),
        ];
        for (seconds, micros, expected) in cases {
            let at = UNIX_EPOCH + Duration::new(seconds, micros * 1000);
            let mut text = String::new();
            write_timestamp(&mut text, at).unwrap();
            assert_eq!(text, expected);
        }
    }

    #[test]
    fn json_strings_escape_as_serde_json_does() {
        let every_ascii: String = (0u8..=0x7f).map(char::from).collect();
        // Each character alone too, in plain text, so that a character the
        // quick look misses cannot hide behind another that it sees.
        let alone = (0u8..=0x7f).map(|byte| format!("plain {} text", char::from(byte)));
        let texts = [every_ascii, String::new(), "é ü 漢 \u{2028}".to_owned()];
        for text in texts.into_iter().chain(alone) {
            let text = text.as_str();
            let mut ours = String::new();
            write_json_str(&mut ours, text).unwrap();
            assert_eq!(ours, serde_json::to_string(text).unwrap());
        }
    }
}
