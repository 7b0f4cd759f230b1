//! Every error the framework raises is a problem document too.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Servers};

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/nope").await, 404).await;
    assert_problem(app.get("/v999/hello").await, 404).await;
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
async fn bodies_past_the_limit_are_413_problems() {
    let app = spawn_app_with(&Servers::shared(), &["--max-body-bytes=1024"]).await;
    let post = |bytes: usize| {
        app.client
            .post(app.url("/v1/hello"))
            .header("content-type", "application/json")
            .body(vec![b' '; bytes])
            .send()
    };

    assert_problem(post(1025).await.unwrap(), 413).await;
    // Within the limit the request goes on (to its 405: hello is GET only).
    assert_problem(post(1024).await.unwrap(), 405).await;
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit_whatever_its_headers_say() {
    let app = spawn_app_with(&Servers::shared(), &["--max-body-bytes=1024"]).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();

    // No Content-Length to trust: chunks until the body is 4 KiB.
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    let request = format!(
        "POST /v1/hello HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test]
async fn oversized_headers_are_431_problems() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/v1/hello"))
        .header("x-padding", "x".repeat(20_000))
        .send()
        .await
        .unwrap();

    assert_problem(response, 431).await;
}
