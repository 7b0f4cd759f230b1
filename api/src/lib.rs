//! The service: a versioned HTTP API on poem, with PostgreSQL for users and
//! Redis for sessions. `main.rs` only calls [`cli::main`].

pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod metrics;
pub mod names;
pub mod openapi;
pub mod password;
pub mod ratelimit;
pub mod requests;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod versions;
