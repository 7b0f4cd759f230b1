//! Version 2: a structured hello.

use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::error::ApiError;

#[derive(Debug, Object)]
#[oai(rename = "GreetingV2")]
pub struct Greeting {
    pub text: String,
    /// BCP 47 language tag of `text`.
    pub language: String,
}

#[derive(Debug, Object)]
#[oai(rename = "HelloV2")]
pub struct Hello {
    /// Always `v2`.
    pub version: String,
    pub greeting: Greeting,
}

pub struct Api;

#[OpenApi(prefix_path = "/v2", tag = "ApiTags::V2")]
impl Api {
    /// Hello, v2
    ///
    /// Greets `name` when given.
    #[oai(path = "/hello", method = "get")]
    async fn hello(
        &self,
        /// Who to greet.
        #[oai(validator(min_length = 1, max_length = 100))]
        name: Query<Option<String>>,
    ) -> Result<Json<Hello>, ApiError> {
        let who = name.0.as_deref().unwrap_or("world");
        Ok(Json(Hello {
            version: "v2".into(),
            greeting: Greeting {
                text: format!("Hello, {who}!"),
                language: "en".into(),
            },
        }))
    }
}
