//! What an operator sees: `/metrics` as Prometheus reads it, counters that
//! follow the traffic across worker processes, request logs, and the
//! monitoring stack's own configuration.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cli::run_with_input;
use crate::deploy::tool;
use crate::helpers::{eventually, free_port, free_ports, repo_root, spawn_app};
use crate::serving::Served;

/// One sample as Prometheus' own Python parser reads it.
#[derive(Debug, serde::Deserialize)]
pub struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `/metrics` text, parsed by prometheus_client and linted by promtool:
/// either refusing it fails the test.
pub fn parse(text: &str) -> Vec<Sample> {
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        samples = [{'name': s.name, 'labels': s.labels, 'value': s.value}\n\
                   for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
        json.dump(samples, sys.stdout)";
    let parsed = feed(Command::new(tool("python")).args(["-c", script]), text);
    let linted = feed(
        Command::new(tool("promtool")).args(["check", "metrics"]),
        text,
    );
    assert!(linted.is_ok(), "promtool check metrics: {linted:?}\n{text}");
    serde_json::from_str(&parsed.unwrap_or_else(|err| panic!("{err}\n{text}"))).unwrap()
}

/// Runs `command` with `input` on stdin; its stdout, or why it failed.
fn feed(command: &mut Command, input: &str) -> Result<String, String> {
    let output = run_with_input(command, input);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The value of the sample `name{labels}` (other labels ignored), 0 if absent.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The JSON `answered` line of the request `request_id` in `served`'s log,
/// waiting a moment for it to be written.
pub async fn answered_line(served: &Served, request_id: &str) -> Value {
    let find = || {
        served.log().lines().find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            let ours = line["span"]["request_id"] == request_id;
            (ours && line["message"] == "answered").then_some(line)
        })
    };
    let logged = eventually(Duration::from_secs(5), || async { find().is_some() }).await;
    assert!(
        logged,
        "no answered line for {request_id}:\n{}",
        served.log()
    );
    find().unwrap()
}

pub async fn scrape(base: &str) -> Vec<Sample> {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().await.unwrap())
}

fn hello_200(samples: &[Sample]) -> f64 {
    let labels = [("route", "/v1/hello"), ("status", "200"), ("method", "GET")];
    value(samples, "http_requests_total", &labels)
}

#[tokio::test]
async fn metrics_parse_and_counters_follow_the_traffic() {
    let app = spawn_app().await;
    let before = scrape(&app.address).await;

    for _ in 0..3 {
        assert_eq!(app.get("/v1/hello").await.status(), 200);
    }
    assert_eq!(app.get("/no/such/path").await.status(), 404);
    // Borrows a database connection, which goes back to the pool idle.
    assert_eq!(app.get("/readyz").await.status(), 200);
    let after = scrape(&app.address).await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(hello_200(&after) - hello_200(&before), 3.0);
    // The latency histogram saw the same requests.
    let hello = [("route", "/v1/hello"), ("status", "200"), ("le", "+Inf")];
    assert_eq!(delta("http_request_duration_seconds_bucket", &hello), 3.0);
    // Unknown paths share one series, whatever they are.
    assert_eq!(
        delta(
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    // The scrape itself is the one request in flight.
    assert_eq!(value(&after, "http_requests_in_flight", &[]), 1.0);
    assert!(value(&after, "db_pool_max_connections", &[]) >= 1.0);
    assert!(value(&after, "db_pool_connections", &[("state", "idle")]) >= 1.0);
}

#[tokio::test]
async fn one_scrape_counts_every_worker_and_keeps_a_dead_workers_counts() {
    let first = free_ports(2);
    let served = Served::start(2, &[("FIRST_WORKER_PORT", &first.to_string())]).await;
    let (port_a, port_b) = (first, first + 1);
    let worker_b = served.worker_at(port_b).await.unwrap();
    for (port, times) in [(port_a, 5), (port_b, 7)] {
        for _ in 0..times {
            assert_eq!(served.get_at(port, "/v1/hello").await, Some(200));
        }
    }

    // Worker A answers for both: its own live numbers and B's published ones.
    let a = format!("http://127.0.0.1:{port_a}");
    let counted = eventually(Duration::from_secs(5), || async {
        hello_200(&scrape(&a).await) == 12.0
    })
    .await;
    assert!(
        counted,
        "worker A's scrape never showed all 12 requests:\n{}",
        served.log()
    );

    // B crashes; the master replaces it and keeps what it had counted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker_b),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let replaced = eventually(Duration::from_secs(15), || async {
        let workers = served.workers();
        workers.len() == 2 && !workers.contains(&worker_b)
    })
    .await;
    assert!(replaced, "worker B was not replaced:\n{}", served.log());
    for port in [port_a, port_b] {
        let samples = scrape(&format!("http://127.0.0.1:{port}")).await;
        assert_eq!(hello_200(&samples), 12.0, "scraped on {port}");
        assert_eq!(
            value(&samples, "worker_restarts_total", &[("reason", "crash")]),
            1.0
        );
        assert_eq!(
            value(&samples, "worker_restarts_total", &[("reason", "timeout")]),
            0.0
        );
    }
}

#[tokio::test]
async fn request_logs_are_json_lines_with_id_route_status_and_latency() {
    let served = Served::start(1, &[("LOG_FORMAT", "json")]).await;
    let request = served
        .client
        .get(format!("{}/v1/hello", served.base))
        .header("x-request-id", "observed-4711");
    assert_eq!(request.send().await.unwrap().status(), 200);

    let line = answered_line(&served, "observed-4711").await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["status"], 200);
    assert!(
        line["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["span"]["route"], "/v1/hello");
}

#[test]
fn the_prometheus_config_loads_and_the_dashboard_uses_the_provisioned_source() {
    let config = repo_root().join("monitoring/prometheus.yml");
    let checked = Command::new(tool("promtool"))
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let sources = std::fs::read_to_string(
        repo_root().join("monitoring/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(
        sources.contains("uid: prometheus") && sources.contains("url: http://prometheus:9090"),
        "{sources}"
    );
    for panel in dashboard()["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{}",
            panel["title"]
        );
        assert!(
            !queries(panel).is_empty(),
            "{} has no query",
            panel["title"]
        );
    }
}

fn dashboard() -> Value {
    let path = repo_root().join("monitoring/grafana/dashboards/service.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn queries(panel: &Value) -> Vec<String> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// A real Prometheus scrapes a running service; every query on the
/// dashboard must parse and those about traffic must find it.
#[tokio::test]
async fn a_real_prometheus_scrapes_the_service_and_every_dashboard_query_runs() {
    let app = spawn_app().await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = app.address.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: service\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(data.path().join("prometheus.yml"), config).unwrap();
    let mut prometheus = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            data.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}/api/v1/query");
    let query = |expr: String| {
        let api = api.clone();
        async move {
            let response = reqwest::Client::new()
                .get(&api)
                .query(&[("query", expr)])
                .send()
                .await
                .ok()?;
            response.json::<Value>().await.ok()
        }
    };

    // Traffic while Prometheus scrapes, until a rate over it shows.
    let rate = "sum(rate(http_requests_total{route=\"/v1/hello\"}[5s]))".to_owned();
    let seen = eventually(Duration::from_secs(30), || async {
        for _ in 0..5 {
            app.get("/v1/hello").await;
        }
        let answer = query(rate.clone()).await;
        answer.is_some_and(|a| {
            a["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        })
    })
    .await;

    let mut failures = Vec::new();
    if seen {
        for panel in dashboard()["panels"].as_array().unwrap() {
            for expr in queries(panel) {
                let expr = expr
                    .replace("$job", "service")
                    .replace("$__rate_interval", "5s");
                let answer = query(expr.clone()).await.unwrap_or_default();
                let results = answer["data"]["result"].as_array().map_or(0, Vec::len);
                let title = panel["title"].as_str().unwrap_or_default();
                let about_traffic = ["Requests per second", "Latency percentiles"].contains(&title);
                if answer["status"] != "success" || (about_traffic && results == 0) {
                    failures.push(format!("{title}: {expr} -> {answer}"));
                }
            }
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(seen, "Prometheus never saw the traffic");
    assert!(
        failures.is_empty(),
        "dashboard queries failed:\n{}",
        failures.join("\n")
    );
}

/// Every series `/metrics` has, by name and labels (values aside).
fn series(samples: &[Sample]) -> std::collections::BTreeSet<String> {
    samples
        .iter()
        .map(|s| format!("{}{:?}", s.name, s.labels))
        .collect()
}

/// A client may send any token as a method; metrics label HTTP's own
/// methods by name and every other as `other`, so made-up methods add no
/// series, however many.
#[tokio::test]
async fn made_up_methods_add_no_series() {
    let app = spawn_app().await;
    let send = |method: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.client.request(method, app.url("/x")).send()
    };
    // The first one makes the `other` series, the first scrape its own.
    send("AAAA").await.unwrap();
    scrape(&app.address).await;
    let before = series(&scrape(&app.address).await);

    for n in 0..5 {
        send(&format!("QZ{}", "Z".repeat(100 * n))).await.unwrap();
    }

    let after = scrape(&app.address).await;
    assert_eq!(series(&after), before);
    let other = [("method", "other"), ("route", "unmatched")];
    assert_eq!(value(&after, "http_requests_total", &other), 6.0);
}

/// The per-address budget answers before any route runs, yet its 429s are
/// labelled with the route they were for, not as unmatched.
#[tokio::test]
async fn a_429_of_the_request_budget_is_labelled_with_its_route() {
    let app = crate::helpers::spawn_app_with(
        &crate::helpers::Servers::shared(),
        &["--rate-limit-per-minute=2"],
    )
    .await;
    for _ in 0..3 {
        app.get("/v1/hello").await;
    }
    let samples = scrape(&app.address).await;
    let limited = [("route", "/v1/hello"), ("status", "429"), ("method", "GET")];
    assert_eq!(value(&samples, "http_requests_total", &limited), 1.0);
    let rejections = [("route", "/v1/hello")];
    assert_eq!(
        value(&samples, "rate_limit_rejections_total", &rejections),
        1.0
    );
}
