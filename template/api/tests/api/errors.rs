//! Every error the framework raises is a problem document too.

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/nope").await, 404).await;
    assert_problem(app.get("/v3/hello").await, 404).await;
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let app = spawn_app().await;
    let post = app.client.post(app.url("/v1/hello")).send().await.unwrap();
    assert_problem(post, 405).await;
    let delete = app
        .client
        .delete(app.url("/v1/hello"))
        .send()
        .await
        .unwrap();
    assert_problem(delete, 405).await;
}

#[tokio::test]
async fn wrong_content_types_are_4xx_problems() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/login"))
        .header("content-type", "text/plain")
        .body("username=alice")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!((400..500).contains(&status), "{status}");
    assert_problem(response, status).await;
}
