//! Contract tests for the service, against real PostgreSQL and Redis.
//! One test binary, so the crate is linked once; one module per area of the
//! core, and one folder per feature module (`auth/`: sign-in).

mod auth;
mod cli;
mod connections;
mod contract;
mod database_pool;
mod deploy;
mod deploy_kubernetes;
mod docs_page;
mod errors;
mod hello;
mod helpers;
mod layout;
mod observability;
mod outages;
mod platform;
mod proxy;
mod ratelimits;
mod schema;
mod serving;
mod tls;
mod traces;
mod versioning;
