//! Version 1: the original hello.

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;

#[derive(Debug, Object)]
#[oai(rename = "HelloV1")]
pub struct Hello {
    /// Always `v1`.
    pub version: String,
    pub message: String,
}

pub struct Api;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::V1")]
impl Api {
    /// Hello, v1
    #[oai(path = "/hello", method = "get")]
    async fn hello(&self) -> Json<Hello> {
        Json(Hello {
            version: "v1".into(),
            message: "Hello, world!".into(),
        })
    }
}
