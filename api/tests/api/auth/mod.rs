//! Sign-in (`app::modules::auth`): its contract tests, on the core's harness
//! with sign-in's own helpers beside it. A service generated without sign-in
//! has neither this folder nor the `mod auth;` line in `main.rs`.

mod cli;
mod contract;
mod docs_page;
mod epochs;
mod errors;
mod events;
mod forward_auth;
mod hasher;
mod helpers;
mod input;
mod login;
mod migrations;
mod name_cache;
mod outages;
mod platform;
mod profile;
mod proxy;
mod ratelimits;
mod roles;
mod schema;
mod search;
mod sessions;
mod traces;
