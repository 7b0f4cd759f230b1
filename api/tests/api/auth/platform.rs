//! The OpenAPI document describes sign-in's endpoints, and which of them
//! need a token.

use crate::helpers::spawn_app;
use crate::platform::openapi_document;

#[tokio::test]
async fn openapi_document_describes_exactly_the_endpoints() {
    let app = spawn_app().await;
    let spec = openapi_document(&app).await;

    let mut documented: Vec<String> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            let methods = operations.as_object().unwrap().keys();
            methods.map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    documented.sort();
    // Every version has its hello (`make version` adds one with each);
    // the rest is listed.
    let versions = app::openapi::versions_in(&spec);
    let hellos: Vec<String> = versions.iter().map(|v| format!("GET /{v}/hello")).collect();
    let mut expected: Vec<&str> = hellos.iter().map(String::as_str).collect();
    expected.extend(["GET /healthz", "GET /readyz"]);
    expected.extend([
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
    ]);
    expected.sort();
    assert_eq!(documented, expected);

    // Errors are documented as problem documents.
    let unavailable = &spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"];
    assert!(
        unavailable.get("application/problem+json").is_some(),
        "{unavailable}"
    );
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
