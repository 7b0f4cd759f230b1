//! Probes, the OpenAPI document, the docs page and static files.

use poem_openapi::OpenApiService;
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

/// The served OpenAPI document.
pub async fn openapi_document(app: &crate::helpers::TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Every operation of `document`, as `METHOD /path`, sorted.
pub fn operations(document: &Value) -> Vec<String> {
    let mut operations: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            let methods = operations.as_object().unwrap().keys();
            methods.map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    operations
}

#[tokio::test]
async fn openapi_document_describes_exactly_the_endpoints() {
    let app = spawn_app().await;
    let spec = openapi_document(&app).await;

    let documented = operations(&spec);
    // Every version has its hello (`make version` adds one with each);
    // the rest is listed, and the feature modules' operations are those
    // they describe themselves.
    let versions = app::openapi::versions_in(&spec);
    let mut expected: Vec<String> = versions.iter().map(|v| format!("GET /{v}/hello")).collect();
    expected.extend(["GET /healthz".to_owned(), "GET /readyz".to_owned()]);
    let modules = OpenApiService::new(app::modules::api(), "modules", "0").spec();
    expected.extend(operations(&serde_json::from_str(&modules).unwrap()));
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
