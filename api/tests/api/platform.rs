//! Probes, the OpenAPI document, the docs page and static files.

use serde_json::Value;

use crate::helpers::{assert_problem, repo_root, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_everything_is_up() {
    let app = spawn_app().await;
    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

async fn openapi_document(app: &crate::helpers::TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

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
#[tokio::test]
async fn docs_page_is_served() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
}

#[tokio::test]
async fn static_png_is_served_byte_for_byte() {
    let app = spawn_app().await;
    let response = app.get("/static/assets/img/happy.png").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let on_disk = std::fs::read(repo_root().join("static/assets/img/happy.png")).unwrap();
    assert_eq!(bytes.as_ref(), on_disk.as_slice());
}

#[tokio::test]
async fn static_files_answer_head_with_headers_and_no_body() {
    let app = spawn_app().await;
    let response = app
        .client
        .head(app.url("/static/assets/img/happy.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_static_files_are_404_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/static/assets/img/sad.png").await, 404).await;
    assert_problem(app.get("/static/../Cargo.toml").await, 404).await;
}
