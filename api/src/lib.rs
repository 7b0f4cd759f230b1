//! The service: a versioned HTTP API on poem, with PostgreSQL and Redis
//! behind it. `main.rs` only calls [`cli::main`].
//!
//! The core (everything but `modules/`) flows one way: the command line and
//! the server start the app (`startup`), whose routes and middleware (the
//! HTTP edge: `routes`, `error`, `requests`, `budget`) call the domain
//! (`ratelimit`, `versions`, `openapi`, `metrics`), which calls storage
//! (`storage`). Feature modules (`modules/`) sit on the core and are wired
//! in by `modules.rs` alone.

pub(crate) mod budget;
pub mod cli;
pub mod config;
pub(crate) mod connections;
pub(crate) mod deadline;
pub mod error;
pub mod extension;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub(crate) mod metrics;
pub mod modules;
pub mod openapi;
pub mod ratelimit;
pub mod requests;
pub(crate) mod routes;
pub(crate) mod server;
pub mod startup;
pub(crate) mod state;
pub mod storage;
pub(crate) mod telemetry;
pub mod versions;
