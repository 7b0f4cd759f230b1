//! Sign-in's endpoints take JSON bodies: the framework's errors about them
//! are problem documents too.

use crate::helpers::{assert_problem, spawn_app};

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
    // The contract documents 415 for a body that is not JSON.
    assert_problem(response, 415).await;
}
