//! The service: a versioned HTTP API on poem, with PostgreSQL and Redis
//! behind it. `main.rs` only calls [`cli::main`].
//!
//! The core (everything but `modules/`) flows one way: the command line and
//! the server start the app (`startup`), whose routes and middleware (the
//! HTTP edge: `routes`, `error`, `requests`, `budget`) call the domain
//! (`ratelimit`, `versions`, `openapi`, `metrics`), which calls storage
//! (`storage`). Feature modules (`modules/`) sit on the core and are wired
//! in by `modules.rs` alone.

pub mod budget;
pub mod cli;
pub mod config;
pub mod error;
pub mod extension;
pub mod metrics;
pub mod modules;
pub mod openapi;
pub mod ratelimit;
pub mod requests;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod versions;
