//! Sign-in: users in PostgreSQL with argon2id passwords, opaque session
//! tokens in Redis, roles, a failed-login throttle per account, the name
//! cache behind `/getName` and `/setName`, and the users' events for other
//! services.
//!
//! It plugs into the core through `crate::modules` and the seams in
//! `crate::extension`; nothing in the core names it. A service generated
//! without sign-in has no such folder, and a few lines fewer in
//! `modules.rs`.

pub mod cli;
pub mod domain;
pub mod events;
mod hasher;
pub mod names;
pub mod passwords;
pub mod routes;
pub mod sessions;
mod settings;
pub mod throttle;
pub mod users;

use std::ops::Deref;
use std::sync::Arc;

use deadpool_postgres::Pool;

pub use cli::Command;
pub use settings::Settings;

use crate::extension::Extensions;
use crate::metrics::Metrics;
use crate::ratelimit::Counters;
use crate::state::AppState;
use crate::storage::migrations::Migrations;
use events::relay::Relay;
use names::NameCache;
use passwords::Passwords;
use sessions::{Limits, SessionStore};
use throttle::LoginThrottle;

/// What sign-in's handlers share: the core's handles they use, and their
/// own. poem's `data` gives every request a clone of it, so it is one
/// `Arc`: a clone counts a reference instead of copying the stores' key
/// prefixes and scripts (eight allocations a request, `/v1/hello`'s
/// included, before it was).
#[derive(Clone)]
pub struct AuthState(Arc<AuthHandles>);

pub struct AuthHandles {
    pub db: Pool,
    pub metrics: Metrics,
    pub sessions: SessionStore,
    pub throttle: LoginThrottle,
    pub names: NameCache,
    pub passwords: Passwords,
}

impl Deref for AuthState {
    type Target = AuthHandles;

    fn deref(&self) -> &AuthHandles {
        &self.0
    }
}

impl AuthState {
    pub fn new(settings: &Settings, core: &AppState) -> Self {
        let limits = Limits {
            absolute: settings.session_ttl(),
            idle: settings.session_idle(),
            per_user: settings.sessions_per_user,
        };
        let throttle = LoginThrottle::new(
            Counters::new(core.redis.clone()),
            settings.login_max_failures,
            settings.login_window(),
        );
        AuthState(Arc::new(AuthHandles {
            db: core.db.clone(),
            metrics: core.metrics.clone(),
            sessions: SessionStore::new(core.redis.clone(), limits),
            throttle,
            names: NameCache::new(core.redis.clone()),
            passwords: passwords(settings),
        }))
    }
}

/// Where this worker hashes: in its own hasher process, or on its threads.
fn passwords(settings: &Settings) -> Passwords {
    let concurrency = settings.hash_concurrency(async_threads());
    if settings.hash_process {
        Passwords::in_helper_process(hasher::Hasher::this_program(), concurrency)
    } else {
        Passwords::new(concurrency)
    }
}

/// The async threads of the runtime building the app: a worker's THREADS.
fn async_threads() -> usize {
    tokio::runtime::Handle::try_current().map_or(1, |runtime| runtime.metrics().num_workers())
}

mod embedded {
    refinery::embed_migrations!("src/modules/auth/migrations");
}

/// Sign-in's tables: users and the outbox. Its own history, beside the
/// core's.
pub fn migrations() -> Migrations {
    Migrations::new(
        "auth_schema_history",
        "api/src/modules/auth/migrations",
        embedded::migrations::runner(),
    )
}

/// Sign-in's part of the API.
pub fn api() -> impl poem_openapi::OpenApi {
    routes::api()
}

/// Adds sign-in to the app the core is building: its state for the
/// handlers, the problem document for a missing token, its metrics, and the
/// event relay.
pub fn install(settings: &Settings, core: &AppState, extensions: &mut Extensions) {
    routes::declare_metrics(&core.metrics);
    extensions.data(AuthState::new(settings, core));
    extensions.layer(routes::missing_token_is_unauthenticated);
    // Events move to Redis while the app serves, and stop with it (an
    // unfinished batch is sent again later: at least once).
    extensions.task(Relay::new(core.db.clone(), &core.redis).run());
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{async_threads, Settings};

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        auth: Settings,
    }

    fn settings(args: &[&str]) -> Settings {
        crate::config::parse_args_only::<Command>(args).auth
    }

    #[test]
    fn a_worker_hashes_by_default_on_as_many_threads_as_it_has_async_ones() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();
        let threads = runtime.block_on(async { async_threads() });
        assert_eq!(threads, 3);
        assert_eq!(settings(&[]).hash_concurrency(threads), 3);
        // HASH_CONCURRENCY, when set, is what counts, and it is at least 1.
        let two = settings(&["--hash-concurrency", "2"]);
        assert_eq!(two.hash_concurrency(threads), 2);
        assert!(settings(&["--hash-concurrency", "0"]).validate().is_err());
    }
}
