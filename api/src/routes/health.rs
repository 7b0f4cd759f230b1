//! Probes: `/healthz` says the process is up, `/readyz` that it can serve.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::{postgres, Dependency};

#[derive(Debug, Object)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
}

pub struct Api;

#[OpenApi(tag = "ApiTags::Health")]
impl Api {
    /// Liveness
    ///
    /// 200 as long as the process answers; touches no dependency.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<Status> {
        Json(Status {
            status: "ok".into(),
        })
    }

    /// Readiness
    ///
    /// 200 when PostgreSQL and Redis both answer, else 503 naming the first
    /// one that does not.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self, state: Data<&AppState>) -> Result<Json<Status>, ApiError> {
        let (postgres, redis) = tokio::join!(postgres::ping(&state.db), state.redis.ping());
        postgres.map_err(|_| ApiError::Unavailable(Dependency::Postgres))?;
        redis.map_err(|_| ApiError::Unavailable(Dependency::Redis))?;
        Ok(Json(Status {
            status: "ready".into(),
        }))
    }
}
