//! The HTTP API: one `#[OpenApi]` area a module, one module a version.
//!
//! `make version NEW=v3` adds a version: `v3/`, with its module, tag and
//! entry in [`api`] here (scripts/new-version.sh; docs/versioning.md).

pub mod admin;
pub mod auth;
pub mod docs;
pub mod health;
pub mod metrics;
pub mod profile;
pub mod text;
pub mod v1;
pub mod v2;

use poem_openapi::{OpenApi, OpenApiService, Tags};

#[derive(Tags)]
pub enum ApiTags {
    /// Version 1 of the API.
    V1,
    /// Version 2 of the API.
    V2,
    /// Logging in and out.
    Auth,
    /// The signed-in user's own profile.
    Profile,
    /// What only admins may do.
    Admin,
    /// Liveness and readiness probes.
    Health,
}

/// The whole API, with its OpenAPI description.
pub fn api() -> OpenApiService<impl OpenApi, ()> {
    OpenApiService::new(
        (
            v1::Api,
            v2::Api,
            auth::Api,
            profile::Api,
            admin::Api,
            health::Api,
        ),
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
    )
    .description(env!("CARGO_PKG_DESCRIPTION"))
}
