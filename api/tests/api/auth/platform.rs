//! The OpenAPI document describes sign-in's endpoints, and which of them
//! need a token.

use poem_openapi::OpenApiService;

use crate::helpers::spawn_app;
use crate::platform::{openapi_document, operations};

/// The whole document is the core's and the modules' (the core's
/// `platform` test); this is sign-in's part, listed.
#[test]
fn sign_in_describes_exactly_its_endpoints() {
    let spec = OpenApiService::new(app::modules::auth::api(), "auth", "0").spec();
    let documented = operations(&serde_json::from_str(&spec).unwrap());
    let mut expected = [
        "GET /v2/users",
        "PUT /v2/users/{id}/role",
        "DELETE /v2/users/{id}/sessions",
        "GET /v2/sessions",
        "POST /v2/password",
        "DELETE /v2/sessions",
        "POST /login",
        "POST /logout",
        "GET /auth/verify",
        "POST /setName",
        "GET /getName",
    ]
    .map(str::to_owned)
    .to_vec();
    expected.sort();
    assert_eq!(documented, expected);
}

#[tokio::test]
async fn openapi_document_declares_bearer_auth_on_protected_endpoints() {
    let app = spawn_app().await;
    let spec = openapi_document(&app).await;

    let scheme = &spec["components"]["securitySchemes"]["BearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let paths = &spec["paths"];
    let admin = &spec["components"]["securitySchemes"]["AdminAuth"];
    assert_eq!(admin["scheme"], "bearer");
    for (path, method, scheme) in [
        ("/getName", "get", "BearerAuth"),
        ("/setName", "post", "BearerAuth"),
        ("/logout", "post", "BearerAuth"),
        ("/v2/sessions", "get", "BearerAuth"),
        ("/v2/password", "post", "BearerAuth"),
        ("/v2/sessions", "delete", "BearerAuth"),
        ("/v2/users", "get", "AdminAuth"),
        ("/v2/users/{id}/role", "put", "AdminAuth"),
        ("/v2/users/{id}/sessions", "delete", "AdminAuth"),
    ] {
        let security = &paths[path][method]["security"];
        assert_eq!(security[0][scheme], serde_json::json!([]), "{path}");
        let unauthorized = &paths[path][method]["responses"]["401"]["content"];
        assert!(
            unauthorized.get("application/problem+json").is_some(),
            "{path}"
        );
    }
    for (path, method) in [("/v1/hello", "get"), ("/login", "post"), ("/readyz", "get")] {
        assert!(paths[path][method].get("security").is_none(), "{path}");
    }
}
