//! `serve` as a process model: a real master and real workers, driven with
//! real signals. Every wait is bounded; every process is killed at the end.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::{eventually, free_port, fresh_database, service_env, Servers};

const PATIENCE: Duration = Duration::from_secs(15);

struct Served {
    master: Child,
    base: String,
    /// One connection per request, as a proxy without keepalive would do:
    /// a request must never fail because the worker it reached was retired.
    client: reqwest::Client,
    log: tempfile::NamedTempFile,
}

impl Served {
    async fn start(workers: usize, extra: &[(&str, &str)]) -> Served {
        let workers_env = workers.to_string();
        let mut env = vec![("WORKERS", workers_env.as_str())];
        env.extend_from_slice(extra);
        Served::start_with_env(workers, &env).await
    }

    /// Starts `serve` with `env` on top of the test servers' settings, and
    /// waits until `workers` workers answer.
    async fn start_with_env(workers: usize, env: &[(&str, &str)]) -> Served {
        let servers = Servers::shared();
        let database_url = fresh_database(&servers).await;
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let master = Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(service_env(&database_url, &servers))
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("THREADS", "1")
            .env("TEST_HOOKS", "true")
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let served = Served {
            master,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            log,
        };
        let up = eventually(PATIENCE, || async {
            served.workers().len() == workers && served.get("/healthz").await == Some(200)
        })
        .await;
        assert!(up, "the service did not come up:\n{}", served.log());
        served
    }

    async fn get(&self, path: &str) -> Option<u16> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await;
        response.ok().map(|r| r.status().as_u16())
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.master.id() as i32), signal).unwrap();
    }

    /// The master's live children, oldest first.
    fn workers(&self) -> Vec<i32> {
        children_of(self.master.id() as i32)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits for the master to exit, at most `limit`.
    async fn exit_status(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.master.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        for pid in self.workers() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// Processes whose parent is `parent` (from /proc), by ascending pid.
fn children_of(parent: i32) -> Vec<i32> {
    let mut children: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // The fields after the command name, which is in parentheses:
            // state, then the parent's pid.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let mut fields = after_name.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
            ppid == Some(parent) && state != Some("Z")
        })
        .collect();
    children.sort_unstable();
    children
}

#[tokio::test]
async fn a_killed_worker_is_replaced_and_the_service_keeps_answering() {
    let served = Served::start(2, &[]).await;
    let victim = served.workers()[0];

    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();

    let replaced = eventually(PATIENCE, || async {
        let workers = served.workers();
        workers.len() == 2 && !workers.contains(&victim)
    })
    .await;
    assert!(replaced, "not replaced:\n{}", served.log());
    for _ in 0..20 {
        assert_eq!(served.get("/v1/hello").await, Some(200));
    }
    assert!(served.log().contains("worker died; replacing it"));
}

#[tokio::test]
async fn sighup_replaces_every_worker_without_failing_a_request() {
    let served = Served::start(2, &[]).await;
    let before = served.workers();
    let (mut ok, mut failed) = (0, 0);

    served.signal(Signal::SIGHUP);
    let deadline = Instant::now() + PATIENCE;
    let mut replaced_at = None;
    // Keep sending until the old workers have been gone for a moment.
    while Instant::now() < deadline {
        match served.get("/v1/hello").await {
            Some(200) => ok += 1,
            _ => failed += 1,
        }
        let now = served.workers();
        if replaced_at.is_none() && now.len() == 2 && now.iter().all(|pid| !before.contains(pid)) {
            replaced_at = Some(Instant::now());
        }
        if replaced_at.is_some_and(|at| at.elapsed() > Duration::from_millis(500)) {
            break;
        }
    }

    assert!(
        replaced_at.is_some(),
        "workers not replaced:\n{}",
        served.log()
    );
    assert_eq!(failed, 0, "{ok} requests answered, {failed} failed");
    assert!(ok > 10, "only {ok} requests went through the reload");
}

#[tokio::test]
async fn sighup_rereads_the_env_file() {
    let env_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(env_file.path(), "WORKERS=1\n").unwrap();
    let path = env_file.path().display().to_string();
    let served = Served::start_with_env(1, &[("ENV_FILE", &path)]).await;

    std::fs::write(env_file.path(), "WORKERS=3\n").unwrap();
    served.signal(Signal::SIGHUP);

    let grown = eventually(PATIENCE, || async { served.workers().len() == 3 }).await;
    assert!(
        grown,
        "the reload did not apply WORKERS=3:\n{}",
        served.log()
    );
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_the_master_exits_0() {
    let mut served = Served::start(1, &[("GRACEFUL_TIMEOUT", "10")]).await;
    let slow = {
        let client = served.client.clone();
        let url = format!("{}/__test/sleep?ms=1500", served.base);
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    served.signal(Signal::SIGTERM);

    assert_eq!(slow.await.unwrap().ok(), Some(200), "{}", served.log());
    let status = served.exit_status(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", served.log());
}

#[tokio::test]
async fn a_hung_worker_is_killed_after_the_timeout_and_replaced() {
    let served = Served::start(1, &[("WORKER_TIMEOUT", "2")]).await;
    let hung = served.workers()[0];

    // The hook stops the worker's heartbeat and blocks it; don't wait for it.
    let _ = served
        .client
        .get(format!("{}/__test/hang", served.base))
        .timeout(Duration::from_millis(200))
        .send()
        .await;

    let replaced = eventually(PATIENCE, || async {
        let workers = served.workers();
        workers.len() == 1 && workers[0] != hung && served.get("/healthz").await == Some(200)
    })
    .await;
    assert!(replaced, "hung worker not replaced:\n{}", served.log());
    assert!(served.log().contains("worker killed for timeout"));
}

#[tokio::test]
async fn sigttin_and_sigttou_add_and_remove_a_worker() {
    let served = Served::start(1, &[]).await;

    served.signal(Signal::SIGTTIN);
    let grown = eventually(PATIENCE, || async { served.workers().len() == 2 }).await;
    assert!(grown, "SIGTTIN did not add a worker:\n{}", served.log());

    served.signal(Signal::SIGTTOU);
    let shrunk = eventually(PATIENCE, || async { served.workers().len() == 1 }).await;
    assert!(shrunk, "SIGTTOU did not remove a worker:\n{}", served.log());
    assert_eq!(served.get("/v1/hello").await, Some(200));
}

#[tokio::test]
async fn max_requests_recycles_workers_without_failing_a_request() {
    let served = Served::start(1, &[("MAX_REQUESTS", "5")]).await;
    let first = served.workers()[0];

    for _ in 0..12 {
        assert_eq!(served.get("/v1/hello").await, Some(200), "{}", served.log());
    }

    let recycled = eventually(PATIENCE, || async {
        let workers = served.workers();
        workers.len() == 1 && workers[0] != first
    })
    .await;
    assert!(recycled, "not recycled:\n{}", served.log());
    assert!(served.log().contains("worker recycled"));
}
