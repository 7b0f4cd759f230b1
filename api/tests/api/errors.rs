//! Every error the framework raises is a problem document too.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use poem::{handler, EndpointExt, Route};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, spawn_app_wrapped, Servers};

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

/// A handler that panics gets a problem document with the request's id, the
/// panic is in the log, and the service serves on.
#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_service_serves_on() {
    #[handler]
    fn boom() -> &'static str {
        panic!("a handler broke")
    }
    let app = spawn_app_wrapped(&Servers::shared(), &[], |app| {
        Route::new().at("/boom", boom).nest("/", app).boxed()
    })
    .await;

    let response = app.get("/boom").await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let problem = assert_problem(response, 500).await;
    assert_eq!(problem["request_id"], id.as_str());
    assert_eq!(
        problem["detail"],
        "the server failed to handle this request"
    );
    assert_eq!(app.get("/v1/hello").await.status(), 200);
}

/// Raw bytes, since an HTTP client removes dot segments before sending and
/// the server's own guard would never be reached.
#[tokio::test]
async fn a_path_out_of_the_static_directory_is_refused_whatever_its_spelling() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    for path in [
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/..%2fCargo.toml",
        "/static/%2e%2e%2fCargo.toml",
        "/static/assets/../../Cargo.toml",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer.split(' ').nth(1).unwrap_or_default();
        assert!(
            ["400", "403", "404"].contains(&status),
            "{path}: {}",
            answer.lines().next().unwrap_or_default()
        );
        assert!(!answer.contains("[workspace]"), "{path} read Cargo.toml");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{path}: not a problem document:\n{answer}"
        );
    }
}
