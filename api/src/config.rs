//! Settings. Every setting is an environment variable with a matching flag;
//! the flag wins over the variable, and the real environment wins over the
//! env file (see [`EnvFile`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use crate::modules;
use crate::storage::postgres::DatabaseSettings;
use crate::storage::redis::RedisSettings;

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
    /// Longer than nginx's upstream keepalive_timeout (60 s), so that nginx
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
        self.database
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|err| format!("DATABASE_URL is not a PostgreSQL URL: {err}"))?;
        redis::Client::open(self.redis.url.as_str())
            .map_err(|err| format!("REDIS_URL is not a Redis URL: {err}"))?;
        self.modules.validate()
    }

    /// The settings in effect, one `NAME=value` a line, with secrets masked.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            ("BIND", self.bind.to_string()),
            ("DATABASE_URL", redact_url(&self.database.url)),
            ("DATABASE_POOL_SIZE", self.database.pool_size.to_string()),
            ("DATABASE_TIMEOUT_MS", self.database.timeout_ms.to_string()),
            ("REDIS_URL", redact_url(&self.redis.url)),
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

/// Replaces the password in `scheme://user:password@host/...`, or in a
/// key=value connection string (`host=db password=...`), with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split(' ')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***",
                _ => pair,
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The env file's contribution to the process environment. Variables that
/// were already set when the process started (the real environment) always
/// win; a reload may change or remove only what the file itself set.
#[derive(Debug)]
pub struct EnvFile {
    path: Option<PathBuf>,
    real: HashSet<String>,
    from_file: HashSet<String>,
}

impl EnvFile {
    /// Loads `path`, or `.env.local` when none is named and it exists.
    pub fn load(path: Option<&Path>) -> Result<Self, dotenvy::Error> {
        let default = Path::new(".env.local");
        let path = match path {
            Some(path) => Some(path.to_owned()),
            None if default.is_file() => Some(default.to_owned()),
            None => None,
        };
        let mut env_file = EnvFile {
            path,
            real: std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .collect(),
            from_file: HashSet::new(),
        };
        env_file.reload()?;
        Ok(env_file)
    }

    /// Reads the file again (for SIGHUP). Call it only while the process has
    /// one thread, as the master does: it changes the environment.
    pub fn reload(&mut self) -> Result<(), dotenvy::Error> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut seen = HashSet::new();
        for item in dotenvy::from_path_iter(path)? {
            let (name, value) = item?;
            if !self.real.contains(&name) {
                std::env::set_var(&name, value);
                seen.insert(name);
            }
        }
        for gone in self.from_file.difference(&seen) {
            std::env::remove_var(gone);
        }
        self.from_file = seen;
        Ok(())
    }
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
}
