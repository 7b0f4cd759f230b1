//! TLS to PostgreSQL and Redis, against servers of each test's own that
//! speak nothing else: PostgreSQL with `ssl = on` and a pg_hba.conf of
//! `hostssl` lines only, Redis on a `tls-port` alone. The certificates are
//! made at test time with the `openssl` command: a CA that signs the
//! servers', and another that signs nothing of theirs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use app::error::chain;
use app::startup::MIGRATION_PATIENCE;
use app::storage::migrations;
use app::storage::postgres;
use app::storage::redis::{Redis, RedisSettings};

use crate::cli::{cli, text};
use crate::helpers::{
    eventually, free_port, one_connection, repo_root, spawn_app_on_with, Servers,
};

fn run(command: &mut Command) {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `openssl` in `dir` with `args`, split at spaces (no argument here
/// holds one).
fn openssl(dir: &Path, args: &str) {
    run(Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace()));
}

/// A CA: `NAME.pem` and `NAME.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
             -subj /CN=test-{name} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout {name}.key -out {name}.pem"
        ),
    );
}

/// A server's certificate for `san`, signed by the CA `ca`: `NAME.crt` and
/// `NAME.key` in `dir`.
pub fn make_server_cert(dir: &Path, name: &str, ca: &str, san: &str) {
    let extensions = format!(
        "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={name} \
             -keyout {name}.key -out {name}.csr"
        ),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -days 2 -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
             -extfile {name}.ext -out {name}.crt"
        ),
    );
}

/// PostgreSQL and Redis that speak only TLS, with the certificates of
/// `good` (the CA that signs them), `other` (a CA that does not) and
/// `misnamed` (a certificate from `good` for `db.invalid`, not 127.0.0.1).
struct TlsServers {
    dir: tempfile::TempDir,
    postgres_port: u16,
    redis_port: u16,
    /// Redis with the `misnamed` certificate, when a test asked for it.
    misnamed_redis_port: Option<u16>,
}

impl TlsServers {
    fn start() -> TlsServers {
        let dir = tempfile::Builder::new()
            .prefix(concat!(env!("CARGO_PKG_NAME"), "-tls-test-"))
            .tempdir()
            .unwrap();
        // The postgres user must reach its data directory and certificate
        // when we run as root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_ca(&pki, "good");
        make_ca(&pki, "other");
        make_server_cert(&pki, "server", "good", "IP:127.0.0.1,DNS:localhost");
        make_server_cert(&pki, "misnamed", "good", "DNS:db.invalid");
        let servers = TlsServers {
            dir,
            postgres_port: free_port(),
            redis_port: free_port(),
            misnamed_redis_port: None,
        };
        servers.start_postgres();
        servers.start_redis("redis", "server", servers.redis_port);
        servers
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A CA's certificate, by name.
    fn ca(&self, name: &str) -> String {
        self.path(&format!("pki/{name}.pem")).display().to_string()
    }

    fn start_postgres(&self) {
        let dir = self.path("pg").display().to_string();
        let port = self.postgres_port.to_string();
        services(&["pg-start", &dir, &port, "throwaway"]);
        // PostgreSQL takes a key only if it is its user's and private.
        let key = self.path("pki/server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // As root, the postgres user runs the server: the data directory's.
        let owner = std::fs::metadata(self.path("pg/data")).unwrap().uid();
        std::os::unix::fs::chown(&key, Some(owner), None).unwrap();
        let data = self.path("pg/data");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            self.path("pki/server.crt").display(),
            key.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        // TLS or nothing over TCP; the socket stays for pg_ctl.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        services(&["pg-stop", &dir]);
        services(&["pg-start", &dir, &port, "throwaway"]);
    }

    /// Redis in `self.path(name)`, on `port` with TLS only (`--port 0`),
    /// presenting the certificate `cert`.
    fn start_redis(&self, name: &str, cert: &str, port: u16) {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = |file: &str| self.path(&format!("pki/{file}")).display().to_string();
        let (dir_text, good) = (dir.display().to_string(), pki("good.pem"));
        let (cert, key) = (pki(&format!("{cert}.crt")), pki(&format!("{cert}.key")));
        let args = format!(
            "--bind 127.0.0.1 --port 0 --tls-port {port} --tls-cert-file {cert} \
             --tls-key-file {key} --tls-ca-cert-file {good} --tls-auth-clients no \
             --daemonize yes --appendonly no --dir {dir_text} \
             --pidfile {dir_text}/redis.pid --logfile {dir_text}/redis.log"
        );
        run(Command::new("redis-server")
            .args(args.split_whitespace())
            .args(["--save", ""]));
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server with TLS is not answering on port {port}");
    }

    fn start_misnamed_redis(&mut self) -> u16 {
        let port = free_port();
        self.start_redis("redis-misnamed", "misnamed", port);
        self.misnamed_redis_port = Some(port);
        port
    }

    /// The `postgres` database, with `query` appended.
    fn database_url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.postgres_port
        )
    }

    fn redis_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.redis_port)
    }

    fn servers(&self) -> Servers {
        Servers {
            postgres_admin_url: String::new(),
            redis_url: self.redis_url(),
        }
    }
}

impl Drop for TlsServers {
    /// Best effort and never panicking: a failed test is already unwinding.
    fn drop(&mut self) {
        let script = repo_root().join("scripts/services.sh");
        let stop = |command: &str, dir: &str| {
            let dir = self.path(dir).display().to_string();
            let _ = Command::new(&script).args([command, &dir]).status();
        };
        stop("redis-stop", "redis");
        if self.misnamed_redis_port.is_some() {
            stop("redis-stop", "redis-misnamed");
        }
        stop("pg-stop", "pg");
    }
}

fn services(args: &[&str]) {
    run(Command::new(repo_root().join("scripts/services.sh")).args(args));
}

/// Connects as the service's pool does and answers whether the connection
/// is encrypted, or why it could not connect (the whole chain of causes).
async fn postgres_connects(url: &str) -> Result<bool, String> {
    let settings = one_connection(url);
    let pool = postgres::pool(&settings).map_err(|err| chain(&err))?;
    let client = pool.get().await.map_err(|err| chain(&err))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|err| chain(&err))?;
    Ok(row.get(0))
}

/// Pings Redis as the service does, or says why it could not.
async fn redis_pings(url: &str, ca_file: Option<&str>) -> Result<(), String> {
    let settings = RedisSettings {
        url: url.to_owned(),
        ca_file: ca_file.map(PathBuf::from),
        timeout_ms: 5_000,
        key_prefix: "tls-test:".into(),
    };
    let redis = Redis::new(&settings).map_err(|err| chain(&err))?;
    redis.ping().await.map_err(|err| chain(&err))
}

#[tokio::test]
async fn tls_the_app_reaches_both_stores_over_verified_tls() {
    let servers = TlsServers::start();
    let good = servers.ca("good");
    let database_url = servers.database_url(&format!("sslmode=verify-full&sslrootcert={good}"));
    let redis_ca = format!("--redis-ca-file={good}");
    // Migrations run on start: the migration runner's connection too.
    let app = spawn_app_on_with(&servers.servers(), &database_url, &[&redis_ca]).await;

    let ready = eventually(Duration::from_secs(10), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    assert!(ready, "not ready over TLS");
    // Through the rate limit, which counts in Redis.
    let hello = app.get("/v1/hello").await;
    assert_eq!(hello.status(), 200);
    assert!(hello.headers().contains_key("ratelimit-remaining"));
    // The pool's connections are encrypted (pg_hba.conf leaves no other
    // way, and PostgreSQL says so itself).
    let client = app.db.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // The commands connect the same way.
    let redis_url = servers.redis_url();
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("REDIS_CA_FILE", good.as_str()),
    ];
    let status = cli(&["db", "status"], &env, "");
    assert!(status.status.success(), "{}", text(&status.stderr));
    let check = cli(&["config", "check"], &env, "");
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains(&format!("REDIS_CA_FILE={good}")),
        "{}",
        text(&check.stdout)
    );
}

#[tokio::test]
async fn tls_a_server_certificate_from_another_ca_is_refused() {
    let servers = TlsServers::start();
    let other = servers.ca("other");
    let database_url = servers.database_url(&format!("sslmode=verify-full&sslrootcert={other}"));
    let redis_ca = format!("--redis-ca-file={other}");
    let app = spawn_app_on_with(
        &servers.servers(),
        &database_url,
        &[&redis_ca, "--migrate-on-start=false"],
    )
    .await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);

    // Why, as the pool, the migration runner and Redis' client see it.
    let err = postgres_connects(&database_url).await.unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let database = one_connection(&database_url);
    let migrated = migrations::migrate(&database, app::startup::migrations(), MIGRATION_PATIENCE);
    let err = chain(&migrated.await.unwrap_err());
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let err = redis_pings(&servers.redis_url(), Some(&other))
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    // Without REDIS_CA_FILE, the system's roots, which know neither CA.
    let err = redis_pings(&servers.redis_url(), None).await.unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let system = servers.database_url("sslmode=verify-ca");
    let err = postgres_connects(&system).await.unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    // `require` encrypts and checks nothing, as libpq's does without a
    // root certificate; with one, it checks the chain, as libpq's does.
    assert_eq!(
        postgres_connects(&servers.database_url("sslmode=require")).await,
        Ok(true)
    );
    let require_other = servers.database_url(&format!("sslmode=require&sslrootcert={other}"));
    let err = postgres_connects(&require_other).await.unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    // `prefer`, the default, encrypts when the server offers it.
    assert_eq!(postgres_connects(&servers.database_url("")).await, Ok(true));
}

#[tokio::test]
async fn tls_verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let mut servers = TlsServers::start();
    let good = servers.ca("good");
    // The name checked is `host`; `hostaddr` says where to connect.
    let misnamed = |mode: &str| {
        format!(
            "postgres://postgres@db.example:{}/postgres?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={good}",
            servers.postgres_port
        )
    };
    let err = postgres_connects(&misnamed("verify-full"))
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate") && err.contains("not valid for name"),
        "{err}"
    );
    assert_eq!(postgres_connects(&misnamed("verify-ca")).await, Ok(true));
    let named = servers.database_url(&format!("sslmode=verify-full&sslrootcert={good}"));
    assert_eq!(postgres_connects(&named).await, Ok(true));

    // Redis always checks the name: a certificate of the right CA for
    // another host is refused.
    let port = servers.start_misnamed_redis();
    let url = format!("rediss://127.0.0.1:{port}/0");
    let err = redis_pings(&url, Some(&good)).await.unwrap_err();
    assert!(
        err.contains("invalid peer certificate") && err.contains("not valid for name"),
        "{err}"
    );
    assert_eq!(redis_pings(&servers.redis_url(), Some(&good)).await, Ok(()));
}

#[tokio::test]
async fn tls_plain_text_is_refused_where_the_servers_ask_for_tls() {
    let servers = TlsServers::start();
    // `disable` sends no TLS, and a server that takes TLS only says no: so
    // the connections the other tests make are encrypted ones.
    let err = postgres_connects(&servers.database_url("sslmode=disable"))
        .await
        .unwrap_err();
    assert!(
        err.contains("no pg_hba.conf entry") && err.contains("no encryption"),
        "{err}"
    );
    let plain = format!("redis://127.0.0.1:{}/0", servers.redis_port);
    assert!(redis_pings(&plain, None).await.is_err());
}

#[tokio::test]
async fn tls_settings_that_cannot_work_stop_the_start_by_name() {
    let ca_dir = tempfile::tempdir().unwrap();
    make_ca(ca_dir.path(), "ca");
    let ca = ca_dir.path().join("ca.pem").display().to_string();
    let check = |database_url: &str, redis_url: &str, redis_ca: Option<&str>| {
        let mut env = vec![("DATABASE_URL", database_url), ("REDIS_URL", redis_url)];
        env.extend(redis_ca.map(|path| ("REDIS_CA_FILE", path)));
        let out = cli(&["config", "check"], &env, "");
        (out.status.success(), text(&out.stderr))
    };
    let redis = "rediss://127.0.0.1:6380/0";
    let with = |query: &str| format!("postgres://svc:hunter2@db:5432/svc?{query}");

    let (ok, stderr) = check(
        &with(&format!("sslmode=verify-full&sslrootcert={ca}")),
        redis,
        Some(&ca),
    );
    assert!(ok, "{stderr}");
    let (ok, stderr) = check(&with("sslmode=verify_full"), redis, None);
    assert!(
        !ok && stderr.contains("sslmode=\"verify_full\" is not one of"),
        "{stderr}"
    );
    let (ok, stderr) = check(
        &with("sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"),
        redis,
        None,
    );
    assert!(
        !ok && stderr.contains("cannot read DATABASE_URL's sslrootcert /nonexistent/ca.pem"),
        "{stderr}"
    );
    let (ok, stderr) = check(&with("sslmode=require"), redis, Some("/nonexistent/ca.pem"));
    assert!(
        !ok && stderr.contains("cannot read REDIS_CA_FILE /nonexistent/ca.pem"),
        "{stderr}"
    );
    let not_pem = ca_dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let (ok, stderr) = check(
        &with("sslmode=require"),
        redis,
        Some(&not_pem.display().to_string()),
    );
    assert!(
        !ok && stderr.contains("REDIS_CA_FILE") && stderr.contains("no usable PEM"),
        "{stderr}"
    );
    let (ok, stderr) = check(
        &with("sslmode=require"),
        "redis://127.0.0.1:6379/0",
        Some(&ca),
    );
    assert!(
        !ok && stderr.contains("REDIS_CA_FILE is set but REDIS_URL is not a rediss://"),
        "{stderr}"
    );
    let (ok, stderr) = check(
        &with("sslmode=require"),
        "rediss://127.0.0.1:6380/0#insecure",
        None,
    );
    assert!(!ok && stderr.contains("#insecure"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
