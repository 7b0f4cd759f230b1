//! The test harness: real PostgreSQL and Redis, a fresh database and Redis key
//! prefix per test, and the app running on a free port.
//!
//! The servers come from `TEST_DATABASE_URL` / `TEST_REDIS_URL`, which the
//! test command (`make test`, i.e. scripts/test.sh) sets after starting
//! throwaway ones. Outage tests start their own with [`DedicatedServices`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::config::Settings;
use app::extension::Shared;
use app::startup::{Application, MIGRATION_PATIENCE};
use app::storage::migrations;
use app::storage::postgres::DatabaseSettings;
use clap::{CommandFactory, FromArgMatches, Parser};
use poem::endpoint::BoxEndpoint;
use reqwest::Response;
use serde_json::Value;
use uuid::Uuid;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where PostgreSQL and Redis listen for one test.
#[derive(Clone, Debug)]
pub struct Servers {
    /// A URL to a database we may create databases from.
    pub postgres_admin_url: String,
    pub redis_url: String,
}

impl Servers {
    /// The servers the test command started for the whole run.
    pub fn shared() -> Servers {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with `make test` (scripts/test.sh), which starts PostgreSQL and Redis")
            })
        };
        Servers {
            postgres_admin_url: get("TEST_DATABASE_URL"),
            redis_url: get("TEST_REDIS_URL"),
        }
    }
}

/// Replaces the database name in a postgres:// URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..authority_end], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A connection to the test PostgreSQL as its administrator.
pub async fn postgres_admin(servers: &Servers) -> tokio_postgres::Client {
    let (admin, connection) =
        tokio_postgres::connect(&servers.postgres_admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    admin
}

/// Creates an empty database, without even the migrations, and returns its
/// URL.
pub async fn empty_database(servers: &Servers) -> String {
    let name = format!("test_{}", Uuid::new_v4().simple());
    postgres_admin(servers)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    with_database(&servers.postgres_admin_url, &name)
}

/// Creates an empty database with every migration applied, and returns its
/// URL.
pub async fn fresh_database(servers: &Servers) -> String {
    let url = empty_database(servers).await;
    migrate(&url).await;
    url
}

/// Settings for one connection to the database at `url`, as a test's own
/// (never closed for idling).
pub fn one_connection(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_owned(),
        pool_size: 1,
        timeout_ms: 5_000,
        idle_timeout_ms: 0,
    }
}

/// Applies every migration to the database at `url`, as `serve` does.
pub async fn migrate(url: &str) {
    let database = one_connection(url);
    migrations::migrate(&database, app::startup::migrations(), MIGRATION_PATIENCE)
        .await
        .expect("the migrations apply");
}

/// The environment a `serve` process needs to reach `database_url` and the
/// test servers.
pub fn service_env(database_url: &str, servers: &Servers) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), database_url.into()),
        ("REDIS_URL".into(), servers.redis_url.clone()),
        (
            "REDIS_KEY_PREFIX".into(),
            format!("test:{}:", Uuid::new_v4().simple()),
        ),
        (
            "STATIC_DIR".into(),
            repo_root().join("static").display().to_string(),
        ),
    ]
}

/// A free loopback port, from below the kernel's ephemeral range.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` free loopback ports in a row.
pub fn free_ports(count: u16) -> u16 {
    services_script(&["free-port", &count.to_string()])
        .parse()
        .unwrap()
}

/// Settings as `serve` would parse them from this command line, for the
/// given servers. Only from the command line: every setting's environment
/// variable is ignored, so what the shell running the tests exports (a
/// bench's `RATE_LIMIT_PER_MINUTE`, say) cannot change what a test checks.
pub fn settings_for(database_url: &str, servers: &Servers, extra: &[&str]) -> Settings {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: Settings,
    }
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let static_dir = repo_root().join("static");
    let mut args = vec![
        env!("CARGO_PKG_NAME").to_owned(),
        "--bind=127.0.0.1:0".into(),
        format!("--database-url={database_url}"),
        format!("--redis-url={}", servers.redis_url),
        format!("--redis-key-prefix={prefix}"),
        format!("--static-dir={}", static_dir.display()),
        "--database-timeout-ms=1000".into(),
        "--redis-timeout-ms=500".into(),
        "--graceful-timeout=1".into(),
    ];
    // This binary is the test harness, not the service's: what the modules
    // must do differently for that (the served service's tests,
    // `serving::Served`, run the real binary).
    args.extend(
        app::modules::embedded_arguments()
            .iter()
            .map(|arg| (*arg).to_owned()),
    );
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let matches = Wrapper::command()
        .mut_args(|arg| arg.env(None))
        .try_get_matches_from(args)
        .unwrap_or_else(|error| panic!("test settings: {error}"));
    Wrapper::from_arg_matches(&matches)
        .expect("test settings parse")
        .settings
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Arc<Settings>,
    // The app's own handles, for the feature modules' tests (each in a
    // folder of its own here): a service generated without any module has
    // no test that reads them.
    #[allow(dead_code)]
    pub db: deadpool_postgres::Pool,
    #[allow(dead_code)]
    pub redis: redis::Client,
    /// What the modules installed, the very instances the app serves with.
    #[allow(dead_code)]
    pub shared: Shared,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&Servers::shared(), &[]).await
}

/// Starts the app on its own fresh database; `extra` are more `serve` flags.
pub async fn spawn_app_with(servers: &Servers, extra: &[&str]) -> TestApp {
    spawn_app_wrapped(servers, extra, |app| app).await
}

/// Starts the app with `policy` in place of `api/versions.toml`.
pub async fn spawn_app_with_policy(policy: &str) -> TestApp {
    spawn(&Servers::shared(), &[], policy, |app| app).await
}

/// As [`spawn_app_with`], with the app's endpoint wrapped, e.g. in routes
/// that show a test what the service saw of a request.
pub async fn spawn_app_wrapped(
    servers: &Servers,
    extra: &[&str],
    wrap: impl FnOnce(BoxEndpoint<'static>) -> BoxEndpoint<'static>,
) -> TestApp {
    spawn(servers, extra, app::versions::POLICY, wrap).await
}

/// Starts the app on a database of the caller's, as it is.
pub async fn spawn_app_on(servers: &Servers, database_url: &str) -> TestApp {
    spawn_app_on_with(servers, database_url, &[]).await
}

/// As [`spawn_app_on`], with more `serve` flags.
pub async fn spawn_app_on_with(servers: &Servers, database_url: &str, extra: &[&str]) -> TestApp {
    spawn_on(servers, database_url, extra, app::versions::POLICY, |app| {
        app
    })
    .await
}

async fn spawn(
    servers: &Servers,
    extra: &[&str],
    policy: &str,
    wrap: impl FnOnce(BoxEndpoint<'static>) -> BoxEndpoint<'static>,
) -> TestApp {
    let database_url = fresh_database(servers).await;
    spawn_on(servers, &database_url, extra, policy, wrap).await
}

async fn spawn_on(
    servers: &Servers,
    database_url: &str,
    extra: &[&str],
    policy: &str,
    wrap: impl FnOnce(BoxEndpoint<'static>) -> BoxEndpoint<'static>,
) -> TestApp {
    let settings = settings_for(database_url, servers, extra);
    let application = Application::build_with_policy(settings, policy)
        .await
        .expect("the app starts")
        .wrap(wrap);
    let address = format!("http://{}", application.local_addr());
    let settings = application.settings().clone();
    let db = application.state().db.clone();
    let shared = application.shared().clone();
    tokio::spawn(application.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        // As the app makes its own: over TLS with REDIS_CA_FILE's roots.
        redis: app::storage::redis::client(&settings.redis).unwrap(),
        settings,
        db,
        shared,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
}

/// Asserts `response` is an RFC 9457 problem document with `status` that
/// names the request's id as its `X-Request-ID` header does, and returns its
/// body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/problem+json");
    let request_id = header("x-request-id");
    let body: Value = response.json().await.unwrap();
    assert!(!request_id.is_empty(), "no X-Request-ID: {body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// PostgreSQL and Redis servers of one test's own, which it may stop and start.
pub struct DedicatedServices {
    dir: tempfile::TempDir,
    pub postgres_port: u16,
    pub redis_port: u16,
}

fn services_script(args: &[&str]) -> String {
    let script = repo_root().join("scripts/services.sh");
    let output = Command::new(&script)
        .args(args)
        .output()
        .expect("run scripts/services.sh");
    assert!(
        output.status.success(),
        "services.sh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

impl DedicatedServices {
    pub fn start() -> DedicatedServices {
        let dir = tempfile::Builder::new()
            .prefix(concat!(env!("CARGO_PKG_NAME"), "-test-"))
            .tempdir()
            .unwrap();
        // The postgres user must reach its data directory when we run as root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let services = DedicatedServices {
            postgres_port: free_port(),
            redis_port: free_port(),
            dir,
        };
        services.start_postgres();
        services.start_redis();
        services
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn servers(&self) -> Servers {
        Servers {
            postgres_admin_url: format!(
                "postgres://postgres@127.0.0.1:{}/postgres",
                self.postgres_port
            ),
            redis_url: format!("redis://127.0.0.1:{}/0", self.redis_port),
        }
    }

    pub fn start_postgres(&self) {
        let port = self.postgres_port.to_string();
        services_script(&["pg-start", &self.path("pg"), &port, "throwaway"]);
    }

    pub fn stop_postgres(&self) {
        services_script(&["pg-stop", &self.path("pg")]);
    }

    /// Persistent, so what it holds survives a stop and start, as a real
    /// Redis's does.
    pub fn start_redis(&self) {
        let port = self.redis_port.to_string();
        services_script(&["redis-start", &self.path("redis"), &port, "persist"]);
    }

    pub fn stop_redis(&self) {
        services_script(&["redis-stop", &self.path("redis")]);
    }

    /// Freezes Redis (SIGSTOP): its port still accepts, nothing answers.
    pub fn pause_redis(&self) {
        self.signal_redis(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume_redis(&self) {
        self.signal_redis(nix::sys::signal::Signal::SIGCONT);
    }

    /// Freezes PostgreSQL (SIGSTOP to the postmaster and every backend):
    /// connections stay open and take queries, nothing answers.
    pub fn freeze_postgres(&self) {
        self.signal_postgres("-STOP");
    }

    pub fn thaw_postgres(&self) {
        self.signal_postgres("-CONT");
    }

    fn signal_postgres(&self, signal: &str) {
        assert!(
            self.signal_postgres_quietly(signal),
            "could not signal PostgreSQL {signal}"
        );
    }

    /// Signals the postmaster and its backends; false if it could not.
    fn signal_postgres_quietly(&self, signal: &str) -> bool {
        let pidfile = self.dir.path().join("pg/data/postmaster.pid");
        let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|text| Some(text.lines().next()?.trim().to_owned()))
        else {
            return false;
        };
        // The backends first, so that none is left running behind a
        // stopped postmaster, nor woken after it.
        let _ = Command::new("pkill").args([signal, "-P", &pid]).status();
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .is_ok_and(|status| status.success())
    }

    fn signal_redis(&self, signal: nix::sys::signal::Signal) {
        self.try_signal_redis(signal).unwrap();
    }

    fn try_signal_redis(&self, signal: nix::sys::signal::Signal) -> Result<(), String> {
        let pidfile = self.dir.path().join("redis/redis.pid");
        let text = std::fs::read_to_string(pidfile).map_err(|err| err.to_string())?;
        let pid: i32 = text.trim().parse().map_err(|_| format!("bad pid {text}"))?;
        if pid <= 0 {
            return Err(format!("bad Redis pid {pid}"));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| e.to_string())
    }
}

impl Drop for DedicatedServices {
    /// Best effort and never panicking: a failed test is already unwinding.
    fn drop(&mut self) {
        let script = repo_root().join("scripts/services.sh");
        let stop = |command: &str, dir: &str| {
            let _ = Command::new(&script)
                .args([command, &self.path(dir)])
                .status();
        };
        // A test that failed while either was frozen leaves it stopped,
        // and a stopped server cannot be shut down: wake both first.
        self.signal_postgres_quietly("-CONT");
        let _ = self.try_signal_redis(nix::sys::signal::Signal::SIGCONT);
        stop("redis-stop", "redis");
        stop("pg-stop", "pg");
    }
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
