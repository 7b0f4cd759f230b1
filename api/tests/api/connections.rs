//! The service's own connections keep time limits, as nginx's do: a client
//! that is slow to send its headers, pauses its body, or idles between
//! requests loses the connection, however it trickles. Raw sockets, since
//! an HTTP client would never be this slow.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Servers, TestApp};

/// Limits short enough for a test, and a request deadline far past them,
/// so that it is these limits that act.
const LIMITS: [&str; 4] = [
    "--header-timeout-ms=500",
    "--body-timeout-ms=500",
    "--keepalive-timeout-ms=700",
    "--request-timeout-ms=60000",
];

/// Well past every limit above: a connection still open then is kept.
const PATIENCE: Duration = Duration::from_secs(4);

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

/// Reads until the service closes the connection; what it sent, or `None`
/// if it kept it open past [`PATIENCE`].
async fn closed_within_patience(stream: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(read)) => seen.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Sends `chunks` one every `every`, while the connection lasts; true if it
/// was closed (a write failed, or the service hung up) before the end.
async fn trickle(stream: &mut TcpStream, chunks: &[&[u8]], every: Duration) -> bool {
    for chunk in chunks {
        if stream.write_all(chunk).await.is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(every, stream.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
    }
    false
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(&Servers::shared(), &LIMITS).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    let sent = closed_within_patience(&mut stream).await;
    assert!(sent.is_some(), "an empty connection was kept {PATIENCE:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn headers_trickled_a_line_at_a_time_lose_the_connection() {
    let app = spawn_app_with(&Servers::shared(), &LIMITS).await;
    let mut stream = connect(&app).await;
    let lines: Vec<Vec<u8>> = std::iter::once(b"GET /v1/hello HTTP/1.1\r\n".to_vec())
        .chain((0..20).map(|n| format!("x-slow-{n}: a\r\n").into_bytes()))
        .collect();
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    // A line every 200 ms: each well within any idle limit, the whole
    // far past the header timeout.
    let closed = trickle(&mut stream, &lines, Duration::from_millis(200)).await;
    assert!(closed, "headers trickled for 4 s kept the connection");
}

#[tokio::test]
async fn a_body_that_stops_coming_loses_the_connection_after_the_body_timeout() {
    let app = spawn_app_with(&Servers::shared(), &LIMITS).await;
    let mut stream = connect(&app).await;
    let head = "POST /v1/hello HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n{\"a\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let sent = closed_within_patience(&mut stream).await;
    assert!(
        sent.is_some(),
        "a stalled body kept the connection {PATIENCE:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = spawn_app_with(&Servers::shared(), &LIMITS).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /v1/hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let sent = closed_within_patience(&mut stream).await;
    let sent = sent.expect("an idle connection was kept");
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    // Answered, then kept for the keep-alive timeout: not cut short by the
    // header timeout.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

/// A connection in use is not cut: requests one after another, each within
/// the keep-alive timeout of the last, all answered on one connection.
#[tokio::test]
async fn a_busy_keep_alive_connection_is_kept() {
    let app = spawn_app_with(&Servers::shared(), &LIMITS).await;
    let mut stream = connect(&app).await;
    let mut buffer = [0u8; 4096];
    for _ in 0..4 {
        stream
            .write_all(b"GET /v1/hello HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}
