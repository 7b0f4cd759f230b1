//! Contract tests for the service, against real PostgreSQL and Redis.
//! One test binary, so the crate is linked once; one module per area.

mod cli;
mod contract;
mod deploy;
mod errors;
mod events;
mod forward_auth;
mod hello;
mod helpers;
mod login;
mod name_cache;
mod observability;
mod outages;
mod platform;
mod profile;
mod proxy;
mod ratelimits;
mod roles;
mod schema;
mod search;
mod serving;
mod sessions;
mod versioning;
