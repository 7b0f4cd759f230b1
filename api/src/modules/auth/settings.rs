//! Sign-in's settings, flattened into the service's (`crate::modules`).

use std::time::Duration;

use clap::Args;

/// The most SESSIONS_PER_USER may be.
pub const MAX_SESSIONS_PER_USER: u32 = 1000;

#[derive(Debug, Clone, Args)]
#[group(id = "AuthSettings")]
pub struct Settings {
    /// Lifetime of a session token, in seconds.
    #[arg(
        long = "session-ttl-seconds",
        env = "SESSION_TTL_SECONDS",
        default_value_t = 86_400
    )]
    pub session_ttl_seconds: u64,
    /// Seconds a session may go unused before it ends (each use restarts
    /// the count), within its lifetime.
    #[arg(
        long = "session-idle-seconds",
        env = "SESSION_IDLE_SECONDS",
        default_value_t = 3_600
    )]
    pub session_idle_seconds: u64,
    /// Live sessions a user may have at once; a login past it ends their
    /// oldest.
    #[arg(
        long = "sessions-per-user",
        env = "SESSIONS_PER_USER",
        default_value_t = 10
    )]
    pub sessions_per_user: u32,
    /// Failed logins an account may have within LOGIN_FAILURE_WINDOW_SECONDS
    /// before further attempts get 429, from any address.
    #[arg(
        long = "login-max-failures",
        env = "LOGIN_MAX_FAILURES",
        default_value_t = 5
    )]
    pub login_max_failures: u64,
    #[arg(
        long = "login-failure-window-seconds",
        env = "LOGIN_FAILURE_WINDOW_SECONDS",
        default_value_t = 900
    )]
    pub login_failure_window_seconds: u64,
    /// Password hashes a worker computes at once; extra logins queue. Defaults
    /// to the worker's async threads (THREADS: its share of the CPUs).
    #[arg(long = "hash-concurrency", env = "HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Hash in a helper process of each worker's, in a scheduling group of
    /// its own at a tenth of the weight, started at the first login and ended
    /// when idle (`hasher.rs` says why); false: on threads of the worker's
    /// own.
    #[arg(
        long = "hash-process",
        env = "HASH_PROCESS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub hash_process: bool,
}

impl Settings {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_seconds)
    }

    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_seconds)
    }

    pub fn login_window(&self) -> Duration {
        Duration::from_secs(self.login_failure_window_seconds)
    }

    /// Hashes at once in a worker that has `async_threads` async threads.
    /// Each hash keeps a core busy, so by default a worker hashes on as many
    /// threads as it was given cores: more at once would only share the same
    /// cores (with every other worker's hashes and the async threads) and
    /// hold 19 MiB more each. Measured on 2 cores with 2 workers, 2 hashes
    /// at a time per worker signed in 88 to 92 users a second, 1 at a time
    /// 97 to 106.
    pub fn hash_concurrency(&self, async_threads: usize) -> usize {
        self.hash_concurrency.unwrap_or(async_threads).max(1)
    }

    /// Rejects settings that would parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_ttl_seconds == 0 {
            return Err("SESSION_TTL_SECONDS must be at least 1".into());
        }
        if self.session_idle_seconds == 0 {
            return Err("SESSION_IDLE_SECONDS must be at least 1".into());
        }
        // Every login walks the user's set inside Redis (which runs one
        // script at a time): the cap bounds that walk.
        if !(1..=MAX_SESSIONS_PER_USER).contains(&self.sessions_per_user) {
            return Err(format!(
                "SESSIONS_PER_USER must be 1 to {MAX_SESSIONS_PER_USER}"
            ));
        }
        if self.hash_concurrency == Some(0) {
            return Err("HASH_CONCURRENCY must be at least 1".into());
        }
        if self.login_max_failures == 0 || self.login_failure_window_seconds == 0 {
            return Err(
                "LOGIN_MAX_FAILURES and LOGIN_FAILURE_WINDOW_SECONDS must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// `NAME=value` pairs for `config check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SESSION_TTL_SECONDS", self.session_ttl_seconds.to_string()),
            (
                "SESSION_IDLE_SECONDS",
                self.session_idle_seconds.to_string(),
            ),
            ("SESSIONS_PER_USER", self.sessions_per_user.to_string()),
            ("LOGIN_MAX_FAILURES", self.login_max_failures.to_string()),
            (
                "LOGIN_FAILURE_WINDOW_SECONDS",
                self.login_failure_window_seconds.to_string(),
            ),
            // Empty when unset: the worker's THREADS then.
            (
                "HASH_CONCURRENCY",
                self.hash_concurrency
                    .map_or_else(String::new, |count| count.to_string()),
            ),
            ("HASH_PROCESS", self.hash_process.to_string()),
        ]
    }
}
