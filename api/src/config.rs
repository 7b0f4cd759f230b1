//! Settings. Every setting is an environment variable with a matching flag;
//! the flag wins over the variable, and the real environment wins over the
//! env file (see [`EnvFile`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use crate::error::chain;
use crate::modules;
use crate::storage::postgres::DatabaseSettings;
use crate::storage::redis::{self, RedisSettings};
use crate::storage::tls;
use crate::telemetry::TracingSettings;

/// Where the service listens unless told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";

/// Proxies whose `X-Real-IP` is believed unless told otherwise: nginx's own
/// address when it runs beside the service (`make local`, the tests), and
/// nothing more. A wider range would let anything else in it (another
/// container, another process on the host) name any client, and so spend
/// another's rate-limit budget or hide behind made-up addresses; the compose
/// stacks give nginx a fixed address and set exactly that.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1/32,::1/128";

/// Marks a value in `.env.prod` that must be replaced before going live.
pub const PLACEHOLDER: &str = "CHANGE_ME";

/// Who may read the OpenAPI documents and the docs page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Docs {
    /// Served to anyone, at /docs, /openapi.json and /vN/openapi.json.
    Public,
    /// Not served (404): they list every operation, the admins' included.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Requests per client address per minute, across all workers; 0 for
    /// no limit.
    #[arg(
        long = "rate-limit-per-minute",
        env = "RATE_LIMIT_PER_MINUTE",
        default_value_t = 600
    )]
    pub rate_limit_per_minute: u64,
    /// Largest request body the service reads; past it, 413.
    #[arg(
        long = "max-body-bytes",
        env = "MAX_BODY_BYTES",
        default_value_t = 1_048_576
    )]
    pub max_body_bytes: usize,
    /// Largest total of request header names and values; past it, 431.
    #[arg(
        long = "max-header-bytes",
        env = "MAX_HEADER_BYTES",
        default_value_t = 16_384
    )]
    pub max_header_bytes: usize,
    /// The most a request may take, in milliseconds; past it, 503 (the work
    /// is dropped). Above DATABASE_TIMEOUT_MS and REDIS_TIMEOUT_MS, so that
    /// a dependency's own timeout answers first; below nginx's
    /// proxy_read_timeout, so the client gets a problem document, not a 504.
    #[arg(
        long = "request-timeout-ms",
        env = "REQUEST_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's headers, from its
    /// connection or its first byte after an answer, in milliseconds (as
    /// nginx's client_header_timeout); past it the connection is closed.
    #[arg(
        long = "header-timeout-ms",
        env = "HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_timeout_ms: u64,
    /// The longest a request body may pause between reads, in milliseconds
    /// (as nginx's client_body_timeout); past it the connection is closed.
    #[arg(
        long = "body-timeout-ms",
        env = "BODY_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub body_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept, in milliseconds.
    /// Longer than nginx's upstream keepalive_timeout (5 s), so that nginx
    /// never sends a request on a connection the service is closing.
    #[arg(
        long = "keepalive-timeout-ms",
        env = "KEEPALIVE_TIMEOUT_MS",
        default_value_t = 75_000
    )]
    pub keepalive_timeout_ms: u64,
    /// Directory served under /static.
    #[arg(long = "static-dir", env = "STATIC_DIR", default_value = "static")]
    pub static_dir: PathBuf,
    /// Addresses (CIDR) of the proxies trusted to name the client in
    /// X-Real-IP; anyone else's headers are ignored.
    #[arg(
        long = "trusted-proxies",
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = DEFAULT_TRUSTED_PROXIES
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Serve the API's documents and docs page (`public`), or not (`off`,
    /// as .env.prod has it).
    #[arg(long, env = "DOCS", value_enum, default_value_t = Docs::Public)]
    pub docs: Docs,
    /// `production` refuses settings still holding CHANGE_ME placeholders.
    #[arg(long, env = "ENVIRONMENT", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    #[arg(
        long = "graceful-timeout",
        env = "GRACEFUL_TIMEOUT",
        default_value_t = 30
    )]
    pub graceful_timeout: u64,
    /// Apply pending schema migrations before serving (one process at a
    /// time, the others wait). Off when a deployment runs `db migrate` as a
    /// step of its own.
    #[arg(
        long = "migrate-on-start",
        env = "MIGRATE_ON_START",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub migrate_on_start: bool,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub redis: RedisSettings,
    /// Traces: the OpenTelemetry SDKs' OTEL_* variables.
    #[command(flatten)]
    pub telemetry: TracingSettings,
    /// The feature modules' own settings (`crate::modules`).
    #[command(flatten)]
    pub modules: modules::Settings,
}

impl Settings {
    /// Rejects settings that would parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.database.pool_size == 0 {
            return Err("DATABASE_POOL_SIZE must be at least 1".into());
        }
        let timeouts = [
            ("REQUEST_TIMEOUT_MS", self.request_timeout_ms),
            ("HEADER_TIMEOUT_MS", self.header_timeout_ms),
            ("BODY_TIMEOUT_MS", self.body_timeout_ms),
            ("KEEPALIVE_TIMEOUT_MS", self.keepalive_timeout_ms),
        ];
        for (name, value) in timeouts {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.environment == Environment::Production {
            let secrets = [
                ("DATABASE_URL", &self.database.url),
                ("REDIS_URL", &self.redis.url),
            ];
            for (name, value) in secrets {
                if value.contains(PLACEHOLDER) {
                    return Err(format!(
                        "{name} still holds the {PLACEHOLDER} placeholder; set a real value for production"
                    ));
                }
            }
        }
        // As the pool and Redis will read them, TLS roots included: a
        // wrong sslrootcert or REDIS_CA_FILE stops the start, by name.
        tls::database_config(&self.database.url).map_err(|err| chain(&err))?;
        redis::client(&self.redis).map_err(|err| chain(&err))?;
        self.telemetry.validate().map_err(|err| chain(&err))?;
        self.modules.validate()
    }

    /// The settings in effect, one `NAME=value` a line, with secrets masked.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            ("BIND", self.bind.to_string()),
            ("DATABASE_URL", redact_url(&self.database.url)),
            ("DATABASE_POOL_SIZE", self.database.pool_size.to_string()),
            ("DATABASE_TIMEOUT_MS", self.database.timeout_ms.to_string()),
            (
                "DATABASE_IDLE_TIMEOUT_MS",
                self.database.idle_timeout_ms.to_string(),
            ),
            ("REDIS_URL", redact_url(&self.redis.url)),
            (
                "REDIS_CA_FILE",
                self.redis
                    .ca_file
                    .as_ref()
                    .map_or_else(String::new, |path| path.display().to_string()),
            ),
            ("REDIS_TIMEOUT_MS", self.redis.timeout_ms.to_string()),
            ("REDIS_KEY_PREFIX", self.redis.key_prefix.clone()),
            (
                "RATE_LIMIT_PER_MINUTE",
                self.rate_limit_per_minute.to_string(),
            ),
            ("MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("MAX_HEADER_BYTES", self.max_header_bytes.to_string()),
            ("REQUEST_TIMEOUT_MS", self.request_timeout_ms.to_string()),
            ("HEADER_TIMEOUT_MS", self.header_timeout_ms.to_string()),
            ("BODY_TIMEOUT_MS", self.body_timeout_ms.to_string()),
            (
                "KEEPALIVE_TIMEOUT_MS",
                self.keepalive_timeout_ms.to_string(),
            ),
            ("STATIC_DIR", self.static_dir.display().to_string()),
            (
                "TRUSTED_PROXIES",
                self.trusted_proxies
                    .iter()
                    .map(IpNet::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "DOCS",
                self.docs
                    .to_possible_value()
                    .map_or_else(String::new, |value| value.get_name().to_owned()),
            ),
            (
                "ENVIRONMENT",
                self.environment
                    .to_possible_value()
                    .map_or_else(String::new, |value| value.get_name().to_owned()),
            ),
            ("GRACEFUL_TIMEOUT", self.graceful_timeout.to_string()),
            ("MIGRATE_ON_START", self.migrate_on_start.to_string()),
        ];
        // An endpoint may carry a vendor's credentials in its URL.
        lines.extend(
            self.telemetry
                .describe()
                .into_iter()
                .map(|(name, value)| match name {
                    "OTEL_EXPORTER_OTLP_ENDPOINT" | "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => {
                        (name, redact_url(&value))
                    }
                    _ => (name, value),
                }),
        );
        lines.extend(self.modules.describe());
        env_lines(&lines)
    }
}

/// Settings as `NAME=value` lines, the form `config check` prints.
pub fn env_lines(settings: &[(&str, String)]) -> String {
    settings
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect()
}

/// Replaces the password in a URL (`scheme://user:password@host/...`, and
/// any query parameter named like `password` or `pass`, as libpq's and
/// Redis' sockets take it) or in a key=value connection string (`host=db
/// password=...`, quoted or not) with `***`. Text it cannot read past is
/// masked too: what is shown never holds a password.
pub fn redact_url(url: &str) -> String {
    // A URL parser first drops leading C0 controls and spaces (WHATWG's
    // first step, which redis' follows), so the scheme may come after them.
    let lead = url.len() - url.trim_start_matches(|c: char| c <= ' ').len();
    let scheme_len = url[lead..]
        .find("://")
        .filter(|&at| is_scheme(&url[lead..lead + at]))
        .map(|at| lead + at + 3);
    let Some(scheme_len) = scheme_len else {
        return redact_key_values(url);
    };
    // libpq reads what starts with its scheme as a URL, whatever follows.
    // Another scheme's URL with whitespace in it may be read either way (a
    // URL parser drops or encodes it, as redis' does; it may be key=value
    // pairs), so it is masked as both, more than needed rather than less.
    let postgres = matches!(&url[lead..scheme_len - 3], "postgres" | "postgresql");
    if !postgres && url.contains(char::is_whitespace) {
        return redact_key_values(&redact_as_url(url, scheme_len));
    }
    redact_as_url(url, scheme_len)
}

/// `url` with its userinfo password and its secret query values masked;
/// `scheme_len` is where what follows `scheme://` starts.
fn redact_as_url(url: &str, scheme_len: usize) -> String {
    // Byte ranges to mask. Clients disagree on where the credentials end
    // (libpq: the first `@`; URL parsers: the last of the authority), so
    // from the first `:` to the last `@`; and the secret query values after
    // every `?`, since the client may start its query at any of them (a URL
    // parser at the first; libpq at the first after the credentials, which
    // may themselves hold a `?`).
    let mut masked = Vec::new();
    if let Some(at) = url[scheme_len..].rfind('@').map(|at| at + scheme_len) {
        if let Some(colon) = url[scheme_len..at].find(':') {
            masked.push((scheme_len + colon + 1, at));
        }
    }
    for (question, _) in url.match_indices('?') {
        let mut start = question + 1;
        for parameter in url[start..].split('&') {
            if let Some((key, _)) = parameter.split_once('=') {
                if names_a_secret(key) {
                    masked.push((start + key.len() + 1, start + parameter.len()));
                }
            }
            start += parameter.len() + 1;
        }
    }
    masked.sort_unstable();
    let mut redacted = String::with_capacity(url.len());
    let mut shown_to = 0;
    for (from, to) in masked {
        if to <= shown_to {
            continue;
        }
        if from > shown_to {
            redacted.push_str(&url[shown_to..from]);
            redacted.push_str("***");
        } else if !redacted.ends_with("***") {
            redacted.push_str("***");
        }
        shown_to = to;
    }
    redacted.push_str(&url[shown_to..]);
    redacted
}

/// RFC 3986's `scheme`: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A query parameter's name, percent-decoded as the clients decode it,
/// that may carry a secret.
fn names_a_secret(key: &str) -> bool {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                at += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded)
        .to_lowercase()
        .contains("pass")
}

/// libpq's key=value form, read as tokio-postgres reads it: `key = value`
/// pairs split by whitespace, a value either plain (to the next whitespace)
/// or single-quoted, `\` escaping the next character in either.
fn redact_key_values(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        redacted.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return redacted;
        }
        let key_len = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        let Some(value) = rest[key_len..].trim_start().strip_prefix('=') else {
            redacted.push_str("***");
            return redacted;
        };
        let value = value.trim_start();
        let Some(value_len) = value_len(value).filter(|_| !key.is_empty()) else {
            redacted.push_str("***");
            return redacted;
        };
        redacted.push_str(&rest[..rest.len() - value.len()]);
        if key == "password" {
            redacted.push_str("***");
        } else {
            redacted.push_str(&value[..value_len]);
        }
        rest = &value[value_len..];
    }
}

/// The length of the value `text` starts with, or `None` when there is no
/// value or its quote never closes.
fn value_len(text: &str) -> Option<usize> {
    let quoted = text.starts_with('\'');
    let mut chars = text.char_indices().skip(usize::from(quoted));
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return Some(at + 1),
            c if c.is_whitespace() && !quoted => return (at > 0).then_some(at),
            _ => {}
        }
    }
    (!quoted && !text.is_empty()).then_some(text.len())
}

/// The env file's settings. They are never written into this process's
/// environment: that is sound only while a process has one thread (and
/// `unsafe` from Rust 2024 on). Instead they become the defaults of the
/// command line's arguments ([`EnvFile::apply`]), so the command line and
/// the real environment still win over the file, and the processes the
/// master starts get them in their environment ([`EnvFile::for_children`]).
#[derive(Debug, Default)]
pub struct EnvFile {
    path: Option<PathBuf>,
    /// As the file read last, in its order.
    variables: Vec<(String, String)>,
}

/// Why an env file was not loaded. Nothing of it is applied then.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error(transparent)]
    Read(#[from] dotenvy::Error),
    /// No environment can hold a NUL byte: a child process could not be
    /// given the value.
    #[error("the value of {0} holds a NUL byte")]
    Nul(String),
}

impl EnvFile {
    /// Loads `path`, or `.env.local` when none is named and it exists.
    pub fn load(path: Option<&Path>) -> Result<Self, EnvFileError> {
        let default = Path::new(".env.local");
        let path = match path {
            Some(path) => Some(path.to_owned()),
            None if default.is_file() => Some(default.to_owned()),
            None => None,
        };
        let mut env_file = EnvFile {
            path,
            variables: Vec::new(),
        };
        env_file.reload()?;
        Ok(env_file)
    }

    /// The given variables, as if a file had set them.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_variables(variables: Vec<(String, String)>) -> Self {
        EnvFile {
            path: None,
            variables,
        }
    }

    /// Reads the file again (for SIGHUP). A file that does not read whole
    /// changes nothing.
    pub fn reload(&mut self) -> Result<(), EnvFileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = std::fs::File::open(path).map_err(dotenvy::Error::Io)?;
        self.variables = read_env_file(file)?;
        Ok(())
    }

    /// `command` (and its subcommands) with the file's values as the
    /// defaults of the arguments they name through `env`. clap takes the
    /// command line first, then the real environment, then defaults: the
    /// order a file's variables always had against the other two.
    pub fn apply(&self, command: clap::Command) -> clap::Command {
        let values: HashMap<&str, &str> = self
            .variables
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        with_defaults(command, &values)
    }

    /// What child processes need in their environment to read the same
    /// settings without the file: its variables the real environment does
    /// not set (those the real environment sets they inherit).
    pub fn for_children(&self) -> Vec<(String, String)> {
        self.variables
            .iter()
            .filter(|(name, _)| std::env::var_os(name).is_none())
            .cloned()
            .collect()
    }
}

fn with_defaults(command: clap::Command, values: &HashMap<&str, &str>) -> clap::Command {
    command
        .mut_args(|arg| {
            let value = arg
                .get_env()
                .and_then(|name| name.to_str())
                .and_then(|name| values.get(name));
            match value {
                // A default does not satisfy `required`, a variable did.
                Some(value) => arg.default_value(value.to_string()).required(false),
                None => arg,
            }
        })
        .mut_subcommands(|subcommand| with_defaults(subcommand, values))
}

/// The variables an env file sets, in its order, or why it cannot be used:
/// the first line dotenvy cannot parse, or a value the environment cannot
/// hold. (dotenvy's names are letters, digits, `_` and `.`, never empty.)
pub(crate) fn read_env_file(
    reader: impl std::io::Read,
) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut variables = Vec::new();
    for item in dotenvy::from_read_iter(reader) {
        let (name, value) = item?;
        if value.contains('\0') {
            return Err(EnvFileError::Nul(name));
        }
        variables.push((name, value));
    }
    Ok(variables)
}

/// Parses `args` as the command line alone, with every setting's
/// environment variable ignored: a test's settings are the ones it names,
/// not whatever the shell that ran it exports (a bench's
/// `RATE_LIMIT_PER_MINUTE`, say).
#[cfg(test)]
pub(crate) fn parse_args_only<T: clap::Parser>(args: &[&str]) -> T {
    let command = T::command().mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(std::iter::once("test").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("{error}"));
    T::from_arg_matches(&matches).unwrap_or_else(|error| panic!("{error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_and_only_the_password() {
        assert_eq!(
            redact_url("postgres://api:s3cr:et@db:5432/api"),
            "postgres://api:***@db:5432/api"
        );
        assert_eq!(
            redact_url("amqp://:pw@127.0.0.1:5672/vhost"),
            "amqp://:***@127.0.0.1:5672/vhost"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("host=db user=api"), "host=db user=api");
        assert_eq!(
            redact_url("host=db password=hunter2 user=api"),
            "host=db password=*** user=api"
        );
    }

    /// Found writing the env_file fuzz target's properties: libpq's other places for a
    /// password, each shown as it was before.
    #[test]
    fn redacts_secrets_in_the_query_and_in_quoted_or_spaced_pairs() {
        // Found by the env_file fuzz target: URL parsers drop a carriage
        // return, so this is still a URL with a password to the client.
        for odd in [
            "redis://:an0ther-secret@cache\r:6379/0",
            "redis://:an0ther-secret@cache/0?x=a\u{c}b",
            // Found by the env_file fuzz target: URL parsers drop leading
            // control characters, so this is a URL with a password too.
            "\u{18}\u{18}redis://:an0ther-secret=x@cache/0",
            " \tredis://:an0ther-secret=x@cache/0",
        ] {
            let redacted = redact_url(odd);
            assert!(!redacted.contains("an0ther-secret"), "{redacted:?}");
        }
        assert_eq!(
            redact_url("postgres://api@db/api?sslmode=disable&password=hunter2"),
            "postgres://api@db/api?sslmode=disable&password=***"
        );
        // libpq's query starts after its credentials (the first `@`), and
        // those may hold a `?` of their own (found by the env_file fuzzer).
        assert_eq!(
            redact_url("postgres://db/a?b=c:d@host/api?password=hunter2"),
            "postgres://db/a?b=c:***@host/api?password=***"
        );
        assert_eq!(
            redact_url("postgres://db/api?p%61ssword=hunter2"),
            "postgres://db/api?p%61ssword=***"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("host=db password = 'hunter two' user=api"),
            "host=db password = *** user=api"
        );
        assert_eq!(
            redact_url("host=db password=x://hunter2"),
            "host=db password=***"
        );
        assert_eq!(redact_url("host=db password='unclosed"), "host=db ***");
        // From the fuzzer: libpq ends the credentials at the first `@`,
        // so this password runs on past the query's `?` to the next `@`.
        let url = "postgres://u@db/app?password=s3cret=postgres://u@db/app?x";
        let redacted = redact_url(url);
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert_eq!(
            redact_url("postgres://db/app?password=hunter\x0c2"),
            "postgres://db/app?password=***"
        );
        assert_eq!(
            redact_url("ab://x=1 password=hunter2"),
            "ab://x=1 password=***"
        );
    }

    /// The order clap and the file always had: the command line, then the
    /// real environment, then the file, then the built-in default; with
    /// lists split and flags read as their variables are.
    #[test]
    fn the_files_values_are_defaults_under_the_command_line_and_the_environment() {
        use clap::{Arg, ArgAction, Command};
        let command = || {
            Command::new("t")
                .no_binary_name(true)
                .arg(
                    Arg::new("a")
                        .long("a")
                        .env("ENV_FILE_TEST_A")
                        .default_value("built-in"),
                )
                .arg(Arg::new("path").long("path").env("PATH"))
                .arg(
                    Arg::new("list")
                        .long("list")
                        .env("ENV_FILE_TEST_LIST")
                        .value_delimiter(','),
                )
                .arg(
                    Arg::new("flag")
                        .long("flag")
                        .env("ENV_FILE_TEST_FLAG")
                        .action(ArgAction::SetTrue),
                )
                .arg(
                    Arg::new("needed")
                        .long("needed")
                        .env("ENV_FILE_TEST_NEEDED")
                        .required(true),
                )
        };
        let file = EnvFile::from_variables(
            [
                ("ENV_FILE_TEST_A", "from-file"),
                ("PATH", "from-file"),
                ("ENV_FILE_TEST_LIST", "x,y"),
                ("ENV_FILE_TEST_FLAG", "true"),
                ("ENV_FILE_TEST_NEEDED", "yes"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .to_vec(),
        );
        let parsed = file.apply(command()).get_matches_from(Vec::<String>::new());
        let one = |id: &str| parsed.get_one::<String>(id).cloned();
        assert_eq!(one("a").as_deref(), Some("from-file"));
        assert_eq!(
            one("path"),
            std::env::var("PATH").ok(),
            "the real variable wins"
        );
        let list: Vec<&String> = parsed.get_many("list").unwrap().collect();
        assert_eq!(list, ["x", "y"]);
        assert!(parsed.get_flag("flag"));
        assert_eq!(one("needed").as_deref(), Some("yes"));

        let given = file.apply(command()).get_matches_from(["--a", "given"]);
        assert_eq!(given.get_one::<String>("a").unwrap(), "given");
        let bare = EnvFile::default()
            .apply(command())
            .try_get_matches_from(["--needed=1"]);
        assert_eq!(bare.unwrap().get_one::<String>("a").unwrap(), "built-in");
        let children: Vec<String> = file.for_children().into_iter().map(|(n, _)| n).collect();
        assert!(!children.contains(&"PATH".to_owned()), "{children:?}");
        assert!(children.contains(&"ENV_FILE_TEST_A".to_owned()));
    }

    /// Found writing the env_file fuzz target: a NUL in a value made
    /// `std::env::set_var` panic, on a SIGHUP in the master; and a file
    /// that failed halfway left its first half in the environment.
    #[test]
    fn an_env_file_that_does_not_read_whole_changes_nothing() {
        assert!(matches!(
            read_env_file(&b"A=1\nB=x\0y\n"[..]),
            Err(EnvFileError::Nul(name)) if name == "B"
        ));
        assert!(matches!(
            read_env_file(&b"A=1\nB='unclosed\n"[..]),
            Err(EnvFileError::Read(_))
        ));
        assert_eq!(
            read_env_file(&b"A=1\n# note\nexport B=\"two words\"\n"[..]).unwrap(),
            [("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
    }
}
