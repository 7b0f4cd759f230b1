use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn v1_hello_says_it_is_v1() {
    let app = spawn_app().await;
    let response = app.get("/v1/hello").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "version": "v1", "message": "Hello, world!" })
    );
}

#[tokio::test]
async fn v2_hello_has_its_own_schema_and_says_it_is_v2() {
    let app = spawn_app().await;
    let body: Value = app.get("/v2/hello").await.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "version": "v2",
            "greeting": { "text": "Hello, world!", "language": "en" }
        })
    );
    let named: Value = app.get("/v2/hello?name=Ada").await.json().await.unwrap();
    assert_eq!(named["greeting"]["text"], "Hello, Ada!");
}
