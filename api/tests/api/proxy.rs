//! The service behind a real nginx running the shipped nginx.conf, filled in
//! by scripts/nginx.sh as make local does: what clients get through it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use app::requests::{ClientIp, RequestId};
use poem::endpoint::BoxEndpoint;
use poem::{handler, EndpointExt, Request, Route};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    assert_problem, free_port, repo_root, spawn_app_with, spawn_app_wrapped, Servers, TestApp,
};
use crate::ratelimits::assert_limited;

/// nginx with the shipped configuration, stopped on drop.
pub struct Nginx {
    dir: tempfile::TempDir,
    pub url: String,
}

impl Nginx {
    /// nginx in front of the service on `api_port`, with the settings of
    /// .env.local (as make local has them) but for `overrides`.
    pub fn start(api_port: u16, overrides: &[(&str, &str)]) -> Nginx {
        let dir = tempfile::Builder::new().prefix("nginx-").tempdir().unwrap();
        let port = free_port();
        let mut env = env_file(".env.local");
        env.retain(|name, _| name.starts_with("NGINX_"));
        let static_root = repo_root().join("static");
        env.extend([
            ("NGINX_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "NGINX_STATIC_ROOT".into(),
                static_root.display().to_string(),
            ),
            ("API_HOST".into(), "127.0.0.1".into()),
            ("API_PORT".into(), api_port.to_string()),
        ]);
        env.extend(overrides.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let output = Command::new(repo_root().join("scripts/nginx.sh"))
            .arg("start")
            .arg(dir.path())
            .envs(&env)
            .output()
            .expect("run scripts/nginx.sh");
        assert!(
            output.status.success(),
            "nginx did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Nginx {
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Nginx {
    /// What nginx wrote so far: its JSON access log lines among them.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nginx.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/nginx.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// `NAME=value` lines of one of the shipped env files.
pub fn env_file(name: &str) -> HashMap<String, String> {
    dotenvy::from_path_iter(repo_root().join(name))
        .unwrap()
        .map(|item| item.unwrap())
        .collect()
}

/// What the service saw of a request: the client address it resolved and
/// the request id, read from what its own middleware recorded.
fn with_probe(app: BoxEndpoint<'static>) -> BoxEndpoint<'static> {
    #[handler]
    fn seen(request: &Request) -> String {
        let ip = request
            .extensions()
            .get::<ClientIp>()
            .map(|ip| ip.0.to_string());
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.to_string());
        serde_json::json!({ "client_ip": ip, "request_id": id }).to_string()
    }
    Route::new().at("/probe/seen", seen).nest("/", app).boxed()
}

/// The service with nginx in front; `app.address` is nginx's.
pub struct Proxied {
    pub app: TestApp,
    /// The service's own address.
    pub direct: String,
    _nginx: Nginx,
}

pub async fn spawn_behind_nginx(overrides: &[(&str, &str)]) -> Proxied {
    let app = spawn_app_wrapped(&Servers::shared(), &[], with_probe).await;
    behind_nginx(app, overrides)
}

/// nginx in front of an app the caller started (with its own settings or
/// versions policy); `app.address` becomes nginx's.
pub fn behind_nginx(mut app: TestApp, overrides: &[(&str, &str)]) -> Proxied {
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let nginx = Nginx::start(port, overrides);
    let direct = std::mem::replace(&mut app.address, nginx.url.clone());
    Proxied {
        app,
        direct,
        _nginx: nginx,
    }
}

/// The headers every answer through nginx carries, whoever produced it.
pub fn assert_security_headers(response: &reqwest::Response) {
    let headers = response.headers();
    let status = response.status();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("server", "nginx"),
    ] {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on a {status}"
        );
    }
    for name in ["content-security-policy", "x-request-id"] {
        assert!(headers.contains_key(name), "no {name} on a {status}");
    }
}

#[tokio::test]
async fn security_headers_are_on_every_status_and_server_shows_no_version() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;

    let ok = app.get("/v1/hello").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_security_headers(&ok);
    let not_found = app.get("/no/such/path").await;
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    assert_security_headers(&not_found);
    let too_large = app
        .client
        .post(app.url("/v1/hello"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_security_headers(&too_large);
    assert_problem(too_large, 413).await;
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_change_the_client_address() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;

    let seen: Value = app
        .client
        .get(app.url("/probe/seen"))
        .header("x-forwarded-for", "203.0.113.66")
        .header("x-real-ip", "203.0.113.66")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(seen["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn request_ids_are_passed_through_or_made_and_echoed() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;

    let given = app
        .client
        .get(app.url("/probe/seen"))
        .header("x-request-id", "trace-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-4711");
    let seen: Value = given.json().await.unwrap();
    assert_eq!(seen["request_id"], "trace-4711");

    let made = app.get("/probe/seen").await;
    let echoed = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen: Value = made.json().await.unwrap();
    assert_eq!(seen["request_id"], echoed.as_str());
    assert_eq!(echoed.len(), 32, "nginx's $request_id: {echoed}");

    // One that could break a header or a log line is replaced, not passed on.
    let unusable = app
        .client
        .get(app.url("/probe/seen"))
        .header("x-request-id", "evil\" id")
        .send()
        .await
        .unwrap();
    let replaced = unusable.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(replaced.len(), 32, "{replaced}");
    let seen: Value = unusable.json().await.unwrap();
    assert_eq!(seen["request_id"], replaced.as_str());
}

#[tokio::test]
async fn problem_documents_carry_the_request_id_whoever_answers() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;
    // The service's own 404, and nginx's (it answers /metrics itself).
    for path in ["/v1/no-such-thing", "/metrics"] {
        let response = app
            .client
            .get(app.url(path))
            .header("x-request-id", "problem-4711")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "problem-4711");
        let problem = assert_problem(response, 404).await;
        assert_eq!(problem["request_id"], "problem-4711", "{path}");
    }
}

#[tokio::test]
async fn static_files_are_served_by_nginx_itself_with_cache_headers() {
    // A file only nginx's static root has: the service would answer 404.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("assets")).unwrap();
    std::fs::write(root.path().join("assets/only-nginx.css"), "body {}\n").unwrap();
    let root_path = root.path().display().to_string();
    let proxied = spawn_behind_nginx(&[("NGINX_STATIC_ROOT", &root_path)]).await;
    let path = "/static/assets/only-nginx.css";

    let through_nginx = proxied.app.get(path).await;
    assert_eq!(through_nginx.status(), StatusCode::OK);
    assert_eq!(through_nginx.headers()["content-type"], "text/css");
    let cache = through_nginx.headers()["cache-control"].to_str().unwrap();
    assert!(cache.starts_with("max-age="), "{cache}");
    assert_security_headers(&through_nginx);

    let direct = reqwest::get(format!("{}{path}", proxied.direct))
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn internal_endpoints_are_not_reachable_through_nginx() {
    let proxied = spawn_behind_nginx(&[]).await;

    for path in ["/readyz", "/metrics", "/__test/pid"] {
        let response = proxied.app.get(path).await;
        assert_problem(response, 404).await;
    }
    let direct = reqwest::get(format!("{}/readyz", proxied.direct))
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_is_gzipped_for_clients_that_accept_it() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;

    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

/// With the default TRUSTED_PROXIES, only the proxy's own address beside
/// the service (127.0.0.1, where make local's nginx connects from) names
/// the client. Another peer on the same host, 127.0.0.2, making up a new
/// X-Real-IP on every request is counted as itself and runs out of its
/// budget; the same headers from 127.0.0.1 are believed, one budget each.
#[tokio::test]
async fn by_default_only_the_proxys_own_address_names_the_client() {
    let app = spawn_app_with(&Servers::shared(), &["--rate-limit-per-minute=3"]).await;
    let default: Vec<ipnet::IpNet> = app::config::DEFAULT_TRUSTED_PROXIES
        .split(',')
        .map(|net| net.parse().unwrap())
        .collect();
    assert_eq!(app.settings.trusted_proxies, default);
    let from = |local: &str| {
        reqwest::Client::builder()
            .local_address(local.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let rotating = |client: &reqwest::Client, turn: u8| {
        client
            .get(app.url("/v1/hello"))
            .header("x-real-ip", format!("198.51.100.{turn}"))
            .send()
    };

    let neighbour = from("127.0.0.2");
    for turn in 0..3 {
        let response = rotating(&neighbour, turn).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_limited(rotating(&neighbour, 3).await.unwrap()).await;

    let proxy = from("127.0.0.1");
    for turn in 10..16 {
        let response = rotating(&proxy, turn).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "198.51.100.{turn}");
    }
}

/// nginx answers its own health probe itself: 200 with no service behind
/// it at all, where anything proxied gets 502.
#[tokio::test]
async fn nginx_answers_its_own_health_probe_without_the_service() {
    let nginx = Nginx::start(free_port(), &[]);
    let client = reqwest::Client::new();

    let own = client
        .get(format!("{}/nginx-health", nginx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.text().await.unwrap(), "ok\n");

    let proxied = client
        .get(format!("{}/healthz", nginx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 502);
}

/// An answer read off the wire: its status, its headers (names in lower
/// case, in order, a repeated one as often as it came) and its body.
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawAnswer {
    /// The first value of header `name` (lower case), or "".
    pub fn header<'a>(&'a self, name: &'a str) -> &'a str {
        self.all(name).next().unwrap_or_default()
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(header, _)| header.as_str() == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `request` sent as it is (an HTTP client would fix it up or refuse it)
/// to `address` (`http://host:port`), and the answer read until the server
/// closes, within five seconds.
pub async fn raw_request(address: &str, request: &[u8]) -> RawAnswer {
    raw_request_from(LOOPBACK, address, request).await
}

/// [`raw_request`] from the local address `local` (127.0.0.2: another
/// client on the same host).
pub async fn raw_request_from(local: IpAddr, address: &str, request: &[u8]) -> RawAnswer {
    let mut stream = connect_from(local, address).await;
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes));
    assert!(read.await.is_ok(), "no end of the answer to {request:?}");
    parse_answer(&bytes)
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A connection to `address` (`http://host:port`) from `local`, within
/// five seconds.
pub async fn connect_from(local: IpAddr, address: &str) -> tokio::net::TcpStream {
    let to: SocketAddr = address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connected within 5 s")
        .unwrap()
}

pub fn parse_answer(bytes: &[u8]) -> RawAnswer {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A problem document of `status` with the request id of its X-Request-ID,
/// as [`assert_problem`] checks one reqwest got.
pub fn assert_raw_problem(answer: &RawAnswer, status: u16, what: &str) -> Value {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        "application/problem+json",
        "{what}"
    );
    let problem: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|err| panic!("{what}: not JSON ({err}): {}", answer.body));
    let request_id = answer.header("x-request-id");
    assert!(!request_id.is_empty(), "{what}: no X-Request-ID");
    assert_eq!(problem["request_id"], request_id, "{what}");
    assert_eq!(problem["type"], "about:blank", "{what}");
    assert_eq!(problem["status"], status, "{what}");
    for field in ["title", "detail"] {
        assert!(
            problem[field].as_str().is_some_and(|text| !text.is_empty()),
            "{what}: no {field}: {problem}"
        );
    }
    problem
}

/// What nginx refuses itself, before or after it chose a location, is a
/// problem document with the request id, never nginx's HTML page. Raw
/// bytes: an HTTP client would not send most of these.
#[tokio::test]
async fn nginxs_own_errors_are_problem_documents_with_the_request_id() {
    let proxied = spawn_behind_nginx(&[]).await;
    let nginx = &proxied.app.address;
    let long_uri = format!("/v1/{}", "a".repeat(10_000));
    let large_header = "x".repeat(10_000);
    let cases: Vec<(u16, &str, String)> = vec![
        (400, "an unreadable request line", "GARBAGE\r\n\r\n".into()),
        (400, "no Host", "GET /v1/hello HTTP/1.1\r\n\r\n".into()),
        (
            403,
            "a directory",
            "GET /static/assets/ HTTP/1.1\r\n".into(),
        ),
        (
            404,
            "a missing file with a type",
            "GET /static/none.css HTTP/1.1\r\n".into(),
        ),
        (405, "TRACE", "TRACE /v1/hello HTTP/1.1\r\n".into()),
        (
            405,
            "POST of a file",
            "POST /static/assets/img/happy.png HTTP/1.1\r\nContent-Length: 0\r\n".into(),
        ),
        (
            414,
            "a long request line",
            format!("GET {long_uri} HTTP/1.1\r\n"),
        ),
        (
            431,
            "a large header",
            format!("GET /v1/hello HTTP/1.1\r\nX-Padding: {large_header}\r\n"),
        ),
        (
            501,
            "an unknown transfer coding",
            "POST /v1/hello HTTP/1.1\r\nTransfer-Encoding: gzip\r\n".into(),
        ),
        (
            505,
            "HTTP/2.0 in plain text",
            "GET /v1/hello HTTP/2.0\r\n".into(),
        ),
    ];
    for (status, what, start) in cases {
        // Complete requests get a Host and are closed after the answer.
        let request = if start.ends_with("\r\n\r\n") {
            start
        } else {
            format!("{start}Host: localhost\r\nConnection: close\r\n\r\n")
        };
        let answer = raw_request(nginx, request.as_bytes()).await;
        assert_raw_problem(&answer, status, what);
    }

    // Where the headers were read, the client's id is the problem's.
    let trace = raw_request(
        nginx,
        b"TRACE / HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: trace-4711\r\nConnection: close\r\n\r\n",
    )
    .await;
    let problem = assert_raw_problem(&trace, 405, "TRACE with an id");
    assert_eq!(problem["request_id"], "trace-4711");
}

/// A 405 says what may be tried instead: nginx's own (TRACE, a file POSTed
/// to) with Allow, the service's with its own Allow, never a second one.
#[tokio::test]
async fn nginxs_own_405s_carry_allow_and_the_services_keep_theirs() {
    let proxied = spawn_behind_nginx(&[]).await;
    let nginx = &proxied.app.address;
    let close = "Host: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    let trace = raw_request(
        nginx,
        format!("TRACE /v1/hello HTTP/1.1\r\n{close}").as_bytes(),
    )
    .await;
    assert_raw_problem(&trace, 405, "TRACE");
    let allowed = trace.header("allow");
    assert!(allowed.contains("GET"), "Allow: {allowed}");
    assert!(!allowed.contains("TRACE"), "Allow: {allowed}");

    let file = "/static/assets/img/happy.png";
    let post = raw_request(nginx, format!("POST {file} HTTP/1.1\r\n{close}").as_bytes()).await;
    assert_raw_problem(&post, 405, "POST of a file");
    assert_eq!(post.header("allow"), "GET, HEAD");

    let service = raw_request(
        nginx,
        format!("POST /v1/hello HTTP/1.1\r\n{close}").as_bytes(),
    )
    .await;
    assert_raw_problem(&service, 405, "the service's 405");
    assert_eq!(service.header("allow"), "GET");
    assert_eq!(service.all("allow").count(), 1);
}

/// A directory named without its slash is redirected to a path, not to a
/// URL built from the client's Host, and the redirect is not cached for
/// the week the files are. Raw bytes: the Host is the attacker's.
#[tokio::test]
async fn a_redirect_names_no_client_host_and_is_not_cached_like_a_file() {
    let proxied = spawn_behind_nginx(&[]).await;
    let nginx = &proxied.app.address;
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    };

    let redirect = raw_request(nginx, request("/static/assets").as_bytes()).await;
    assert_eq!(redirect.status, 301, "{}", redirect.body);
    assert_eq!(redirect.header("location"), "/static/assets/");
    assert_eq!(
        redirect.all("cache-control").collect::<Vec<_>>(),
        ["no-cache"]
    );

    // The file below it keeps its week.
    let file = raw_request(nginx, request("/static/assets/img/happy.png").as_bytes()).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.header("cache-control"), "max-age=604800");
}

/// One address may have only so many requests in progress through nginx:
/// bodies trickled a byte at a time (each byte restarts
/// client_body_timeout) hold their connections, and past the limit the
/// address gets a 429 problem document with Retry-After, while another
/// address is served at once; closed, they free the address's slots.
#[tokio::test]
async fn an_address_trickling_bodies_is_held_to_its_limit_and_others_are_served() {
    let proxied = spawn_behind_nginx(&[("NGINX_CONNECTIONS_PER_ADDRESS", "4")]).await;
    let nginx = &proxied.app.address;
    let head = "POST /v1/hello HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nContent-Length: 64\r\n\r\n";
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(LOOPBACK, nginx).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // nginx counts a request once it has read its headers. A request that
    // overtook one of them would take its place, so the probe waits for
    // them, and is a file nginx serves itself, over in an instant.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = b"GET /static/assets/img/happy.png HTTP/1.1\r\nHost: localhost\r\n\
                  Connection: close\r\n\r\n";
    // A byte more of each body, none of which has been answered.
    async fn trickle(slow: &mut [tokio::net::TcpStream]) {
        for stream in slow {
            let mut answer = [0; 1];
            let unanswered = matches!(
                stream.try_read(&mut answer),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock
            );
            assert!(unanswered, "a slow body was answered or closed");
            stream.write_all(b" ").await.unwrap();
        }
    }

    trickle(&mut slow).await;
    let refused = raw_request(nginx, probe).await;
    let problem = assert_raw_problem(&refused, 429, "a fifth request");
    assert!(
        problem["detail"].as_str().unwrap().contains("at once"),
        "{problem}"
    );
    assert_eq!(refused.all("retry-after").collect::<Vec<_>>(), ["1"]);

    // Another address is served, and promptly, while the four still hold.
    trickle(&mut slow).await;
    let started = Instant::now();
    let other = raw_request_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), nginx, probe).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    trickle(&mut slow).await;

    // Closed, they free the address's slots.
    drop(slow);
    let mut status = 0;
    for _ in 0..20 {
        status = raw_request(nginx, probe).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "still refused once its slow bodies closed");
}

/// What hyper refuses inside the service before the app sees it (more
/// than 100 header fields; a control character in a header value) is a
/// problem document too, straight to the service and through nginx alike:
/// not hyper's empty answer.
#[tokio::test]
async fn requests_the_service_cannot_read_get_problem_documents_too() {
    let proxied = spawn_behind_nginx(&[]).await;
    let many_fields: String = (0..120).map(|n| format!("x-field-{n}: a\r\n")).collect();
    let cases = [
        (
            "too many header fields",
            format!("GET /v1/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{many_fields}\r\n"),
            431,
        ),
        (
            "a control character in a header",
            "GET /v1/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-bad: a\u{1}b\r\n\r\n"
                .to_owned(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        for (through, address) in [
            ("service", &proxied.direct),
            ("nginx", &proxied.app.address),
        ] {
            let answer = raw_request(address, request.as_bytes()).await;
            assert_raw_problem(&answer, status, &format!("{what}, to the {through}"));
        }
        // The request's own id, as a client (or nginx) sent it, is kept.
        let with_id = request.replacen("host: x\r\n", "host: x\r\nx-request-id: probe-17\r\n", 1);
        let answer = raw_request(&proxied.direct, with_id.as_bytes()).await;
        let problem = assert_raw_problem(&answer, status, what);
        assert_eq!(problem["request_id"], "probe-17", "{what}");
    }
}

/// nginx gives its idle connections to the service back within seconds of
/// the last request (the upstream's `keepalive_timeout`), so that a worker
/// frees what they hold after a burst instead of keeping it for a minute.
#[tokio::test]
async fn nginx_closes_its_idle_connections_to_the_service_within_seconds() {
    let proxied = spawn_behind_nginx(&[]).await;
    let port: u16 = proxied.direct.rsplit(':').next().unwrap().parse().unwrap();
    // Several at once, so that nginx opens several connections.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let request = proxied
                .app
                .client
                .get(format!("{}/v1/hello", proxied.app.address));
            tokio::spawn(request.send())
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert!(
        connections_to(port) > 0,
        "nginx kept no connection to the service open"
    );

    // 5 s, with room for a loaded machine; nginx's default (60 s) fails it.
    let patience = Duration::from_secs(20);
    let started = Instant::now();
    while connections_to(port) > 0 {
        assert!(
            started.elapsed() < patience,
            "nginx still holds {} idle connections to the service after {patience:?}",
            connections_to(port)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Established TCP connections to `port` on this machine's IPv4 loopback,
/// counted on the accepting side (the kernel's /proc/net/tcp).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state (01: established)
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count()
}
