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

#[tokio::test]
async fn openapi_document_covers_every_endpoint_and_declares_bearer_auth() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.unwrap();

    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/hello", "get"),
        ("/v2/hello", "get"),
        ("/v2/users", "get"),
        ("/login", "post"),
        ("/logout", "post"),
        ("/setName", "post"),
        ("/getName", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let scheme = &spec["components"]["securitySchemes"]["BearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let secured = &paths["/getName"]["get"]["security"];
    assert_eq!(secured[0]["BearerAuth"], serde_json::json!([]));
    assert!(paths["/v1/hello"]["get"].get("security").is_none());
    // Errors are documented as problem documents.
    let unauthorized = &paths["/getName"]["get"]["responses"]["401"]["content"];
    assert!(
        unauthorized.get("application/problem+json").is_some(),
        "{unauthorized}"
    );
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
