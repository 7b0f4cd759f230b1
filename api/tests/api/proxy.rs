//! The service behind a real nginx running the shipped nginx.conf, filled in
//! by scripts/nginx.sh as make local does: what clients get through it.

use std::collections::HashMap;
use std::process::Command;

use app::requests::{ClientIp, RequestId};
use poem::endpoint::BoxEndpoint;
use poem::{handler, EndpointExt, Request, Route};
use reqwest::StatusCode;
use serde_json::Value;

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
            .map(|id| id.0.clone());
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
