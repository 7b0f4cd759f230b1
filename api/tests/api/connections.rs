//! The service's own connections keep time limits, as nginx's do: a client
//! that is slow to send its headers, pauses its body, or idles between
//! requests loses the connection, however it trickles. Raw sockets, since
//! an HTTP client would never be this slow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use app::startup::Application;
use poem::endpoint::BoxEndpoint;
use poem::{handler, EndpointExt, Route};

use crate::helpers::{
    eventually, fresh_database, settings_for, spawn_app_wrapped, Servers, TestApp,
};
use crate::observability::{scrape, value};

/// Limits short enough for a test, far enough apart to tell which acted,
/// and a request deadline past them all.
const LIMITS: [&str; 4] = [
    "--header-timeout-ms=1500",
    "--body-timeout-ms=600",
    "--keepalive-timeout-ms=2500",
    "--request-timeout-ms=60000",
];

/// Well past every limit above: a connection still open then is kept.
const PATIENCE: Duration = Duration::from_secs(4);

/// How often `/probe/abandoned`'s work began, ran to its end, and was
/// dropped unfinished.
static ABANDONED_BEGUN: AtomicUsize = AtomicUsize::new(0);
static ABANDONED_FINISHED: AtomicUsize = AtomicUsize::new(0);
static ABANDONED_DROPPED: AtomicUsize = AtomicUsize::new(0);

/// Counts its work as dropped unless it was disarmed at the end.
struct DropCounter {
    armed: bool,
}

impl Drop for DropCounter {
    fn drop(&mut self) {
        if self.armed {
            ABANDONED_DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The app, with a route that works (sleeps) longer than the body timeout
/// before answering, one that reads its body to the end, and one that
/// works for longer than a test waits and counts what became of its work.
async fn spawn() -> TestApp {
    fn with_slow_route(app: BoxEndpoint<'static>) -> BoxEndpoint<'static> {
        #[handler]
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            "done"
        }
        #[handler]
        fn length(body: String) -> String {
            format!("read {}", body.len())
        }
        #[handler]
        async fn abandoned() -> &'static str {
            let mut counter = DropCounter { armed: true };
            ABANDONED_BEGUN.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            counter.armed = false;
            ABANDONED_FINISHED.fetch_add(1, Ordering::SeqCst);
            "done"
        }
        Route::new()
            .at("/probe/slow", slow)
            .at("/probe/abandoned", poem::post(abandoned))
            .at("/probe/length", poem::post(length))
            .nest("/", app)
            .boxed()
    }
    spawn_app_wrapped(&Servers::shared(), &LIMITS, with_slow_route).await
}

/// How long until the service closed the connection, and what it sent
/// meanwhile; `None` if it kept it past [`PATIENCE`].
async fn time_to_close(stream: &mut TcpStream) -> Option<(Duration, String)> {
    let started = Instant::now();
    let sent = closed_within_patience(stream).await?;
    Some((started.elapsed(), sent))
}

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
    let app = spawn().await;
    let mut stream = connect(&app).await;
    let (took, _) = time_to_close(&mut stream)
        .await
        .expect("an empty connection was kept");
    // The header timeout (1.5 s), not the body's nor the keep-alive's.
    assert!(
        (1300..2300).contains(&took.as_millis()),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn headers_trickled_a_line_at_a_time_lose_the_connection() {
    let app = spawn().await;
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
    let app = spawn().await;
    let mut stream = connect(&app).await;
    let head = "POST /v1/hello HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n{\"a\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (took, _) = time_to_close(&mut stream)
        .await
        .expect("a stalled body kept the connection");
    // The body timeout (0.6 s), before the header timeout (1.5 s) would.
    assert!(took < Duration::from_millis(1400), "closed after {took:?}");
}

/// A body that keeps coming, however slowly, is read to its end: the body
/// timeout is the longest pause, not the longest body.
#[tokio::test]
async fn a_body_that_keeps_coming_is_read_to_its_end() {
    let app = spawn().await;
    let mut stream = connect(&app).await;
    let body = b"a body, slowly";
    let head = format!(
        "POST /probe/length HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A byte every 200 ms: longer in all (2.8 s) than any limit but the
    // request's, each pause a third of the body timeout short of it.
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let closed = trickle(&mut stream, &bytes, Duration::from_millis(200)).await;
    assert!(!closed, "a body that kept coming lost its connection");
    let (_, sent) = time_to_close(&mut stream).await.expect("an answer");
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(sent.ends_with(&format!("read {}", body.len())), "{sent}");
}

/// A handler that works longer than the body timeout, its body read, keeps
/// its connection: no limit of the client's applies while the app works.
#[tokio::test]
async fn a_slow_handler_keeps_its_connection() {
    let app = spawn().await;
    let mut stream = connect(&app).await;
    let request = "POST /probe/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\
                   connection: close\r\n\r\n{}";
    stream.write_all(request.as_bytes()).await.unwrap();
    let (_, sent) = time_to_close(&mut stream).await.expect("an answer");
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(sent.ends_with("done"), "{sent}");
}

/// Waits up to `within` for `counter` to reach `value`.
async fn reaches(counter: &AtomicUsize, value: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while counter.load(Ordering::SeqCst) < value {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A client that hangs up while the app works on its request takes the
/// request with it: the work is dropped at once, not run to an end whose
/// answer could reach no one (a costly computation, a write).
#[tokio::test]
async fn a_request_whose_client_leaves_is_dropped_unfinished() {
    let app = spawn().await;
    let mut stream = connect(&app).await;
    let request = "POST /probe/abandoned HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    stream.write_all(request.as_bytes()).await.unwrap();
    assert!(
        reaches(&ABANDONED_BEGUN, 1, Duration::from_secs(5)).await,
        "the work began"
    );
    drop(stream);
    assert!(
        reaches(&ABANDONED_DROPPED, 1, Duration::from_secs(2)).await,
        "the work was dropped once its client left (it would have run 3 s)"
    );
    assert_eq!(ABANDONED_FINISHED.load(Ordering::SeqCst), 0);
    // Still counted once, as nginx counts it: a 499, under a route label of
    // its own (the layer that drops it sits outside the route's).
    let abandoned = [
        ("method", "POST"),
        ("route", "abandoned"),
        ("status", "499"),
    ];
    let counted = eventually(Duration::from_secs(2), || async {
        value(
            &scrape(&app.address).await,
            "http_requests_total",
            &abandoned,
        ) == 1.0
    })
    .await;
    assert!(counted, "the dropped request is counted as a 499");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = spawn().await;
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
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

/// A connection in use is not cut: requests one after another, each within
/// the keep-alive timeout of the last, all answered on one connection.
#[tokio::test]
async fn a_busy_keep_alive_connection_is_kept() {
    let app = spawn().await;
    let mut stream = connect(&app).await;
    let mut buffer = [0u8; 4096];
    for _ in 0..3 {
        stream
            .write_all(b"GET /v1/hello HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        // Past the header and body timeouts, within the keep-alive one.
        tokio::time::sleep(Duration::from_millis(1800)).await;
    }
}

/// A worker serves two sockets, the shared port and its own, and the
/// kernel picks a client's source port per destination: nginx's connection
/// to one may come from the very address and port of another client's to
/// the other (a bench run lost three POSTs to it, nginx's 502s). Each
/// connection keeps its own limits all the same: a busy one is not cut by
/// the header timeout because another from its address came and went.
#[tokio::test]
async fn connections_from_one_address_to_both_sockets_keep_their_own_limits() {
    let servers = Servers::shared();
    let database_url = fresh_database(&servers).await;
    let sockets: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let settings = settings_for(&database_url, &servers, &LIMITS);
    let app = Application::from_listeners(sockets, settings).expect("the app starts");
    tokio::spawn(app.run_until(std::future::pending()));

    let mut busy = connect_from("127.0.0.1:0".parse().unwrap(), addresses[0]).await;
    let source = busy.local_addr().unwrap();
    assert!(hello(&mut busy, "keep-alive")
        .await
        .starts_with("HTTP/1.1 200"));
    let mut other = connect_from(source, addresses[1]).await;
    assert_eq!(other.local_addr().unwrap(), source);
    assert!(hello(&mut other, "close").await.starts_with("HTTP/1.1 200"));
    drop(other);
    // A request every 500 ms for 3 s: past the header timeout (1.5 s) in
    // all, each well within the keep-alive timeout of the last.
    for sent in 1..=6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answer = hello(&mut busy, "keep-alive").await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "request {sent} on the busy connection: {answer:?}"
        );
    }
}

/// A client socket bound to `source` (its port shared, as the kernel may
/// for different destinations), connected to `to`.
async fn connect_from(source: SocketAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(source).unwrap();
    socket.connect(to).await.unwrap()
}

/// `GET /v1/hello` with `connection`; the answer's head and body as read
/// (empty if the service hung up instead).
async fn hello(stream: &mut TcpStream, connection: &str) -> String {
    let request = format!("GET /v1/hello HTTP/1.1\r\nhost: x\r\nconnection: {connection}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buffer = [0u8; 4096];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
        Ok(Ok(read)) => String::from_utf8_lossy(&buffer[..read]).into_owned(),
        _ => String::new(),
    }
}
