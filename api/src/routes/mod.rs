//! The HTTP API: one `#[OpenApi]` area a module, one module a version.
//!
//! `make version NEW=v3` adds a version: `v3/`, with its module, tag and
//! entry in [`api`] here (scripts/new-version.sh; docs/versioning.md).

pub(crate) mod cached;
pub mod docs;
pub mod health;
pub mod metrics;
pub mod v1;
pub mod v2;

use poem_openapi::{OpenApi, OpenApiService, Tags};

use crate::modules;
use crate::openapi::{DocumentError, Documents};
use crate::versions;

#[derive(Tags)]
pub enum ApiTags {
    /// Version 1 of the API.
    V1,
    /// Version 2 of the API.
    V2,
    /// Liveness and readiness probes.
    Health,
}

/// The whole API, the core's and the modules' (`crate::modules`), with its
/// OpenAPI description.
pub fn api() -> OpenApiService<impl OpenApi, ()> {
    OpenApiService::new(
        (v1::Api, v2::Api, health::Api, modules::api()),
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
    )
    .description(env!("CARGO_PKG_DESCRIPTION"))
}

/// The documents of the code as built, with the committed policy.
pub fn documents() -> Result<Documents, DocumentError> {
    Documents::build(&api().spec(), versions::POLICY)
}
