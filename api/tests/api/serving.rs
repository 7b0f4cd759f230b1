//! `serve` as a process model: a real master and real workers, driven with
//! real signals. Every wait is bounded; every process is killed at the end.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::{eventually, free_port, free_ports, fresh_database, service_env, Servers};

const PATIENCE: Duration = Duration::from_secs(15);

/// The service's binary, as cargo built it for the tests.
fn built_binary() -> PathBuf {
    PathBuf::from(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))))
}

pub struct Served {
    /// The master, or `unshare` running it as PID 1 of a PID namespace.
    master: Child,
    in_namespace: bool,
    /// BIND's port, shared by every worker.
    port: u16,
    pub base: String,
    /// One connection per request, as a proxy without keepalive would do:
    /// a request must never fail because the worker it reached was retired.
    pub client: reqwest::Client,
    log: tempfile::NamedTempFile,
    /// The service's TMPDIR, where the master keeps the workers' metrics:
    /// gone with the test even when the master is killed.
    _tmp: tempfile::TempDir,
    /// The test's own database, which the service uses (the feature
    /// modules' tests add to it; without modules no test reads it).
    #[allow(dead_code)]
    pub database_url: String,
}

impl Served {
    pub async fn start(workers: usize, extra: &[(&str, &str)]) -> Served {
        let workers_env = workers.to_string();
        let mut env = vec![("WORKERS", workers_env.as_str())];
        env.extend_from_slice(extra);
        Served::start_with_env(workers, &env).await
    }

    /// Starts `serve` with `env` on top of the test servers' settings, and
    /// waits until `workers` workers answer.
    async fn start_with_env(workers: usize, env: &[(&str, &str)]) -> Served {
        Served::launch(&[], workers, env).await
    }

    /// Starts one worker with its settings in an env file holding
    /// `contents`, kept for the test to rewrite before a SIGHUP.
    async fn from_env_file(contents: &str) -> (Served, tempfile::NamedTempFile) {
        let env_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(env_file.path(), contents).unwrap();
        let path = env_file.path().display().to_string();
        let served = Served::start_with_env(1, &[("ENV_FILE", &path)]).await;
        (served, env_file)
    }

    /// Runs `serve` behind `wrapper` (a command and its arguments), if any.
    async fn launch(wrapper: &[&str], workers: usize, env: &[(&str, &str)]) -> Served {
        Served::launch_binary(&built_binary(), wrapper, workers, env).await
    }

    /// Runs `serve` from `binary`.
    async fn launch_binary(
        binary: &Path,
        wrapper: &[&str],
        workers: usize,
        env: &[(&str, &str)],
    ) -> Served {
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let servers = Servers::shared();
        let database_url = fresh_database(&servers).await;
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let master = command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(service_env(&database_url, &servers))
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("THREADS", "1")
            .env("TEST_HOOKS", "true")
            .env("TMPDIR", tmp.path())
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let served = Served {
            master,
            in_namespace: !wrapper.is_empty(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            log,
            _tmp: tmp,
            database_url,
        };
        let up = eventually(PATIENCE, || async {
            served.workers().len() == workers && served.get("/healthz").await == Some(200)
        })
        .await;
        assert!(up, "the service did not come up:\n{}", served.log());
        served
    }

    pub async fn get(&self, path: &str) -> Option<u16> {
        self.get_at(self.port, path).await
    }

    pub async fn get_at(&self, port: u16, path: &str) -> Option<u16> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let response = self.client.get(url).send().await;
        response.ok().map(|r| r.status().as_u16())
    }

    /// The pid of the worker that answers on `port`.
    pub async fn worker_at(&self, port: u16) -> Option<i32> {
        let url = format!("http://127.0.0.1:{port}/__test/pid");
        let response = self.client.get(url).send().await.ok()?;
        response.text().await.ok()?.trim().parse().ok()
    }

    /// The master's pid as this test sees it (outside any namespace); none
    /// once it has exited. Never 0 or negative: kill(-1) signals everything.
    fn master_pid(&self) -> Option<i32> {
        let launched = self.master.id() as i32;
        let pid = if self.in_namespace {
            children_of(launched).first()?.pid
        } else {
            launched
        };
        (pid > 0).then_some(pid)
    }

    fn signal(&self, signal: Signal) {
        let master = self.master_pid().expect("the master is running");
        kill(Pid::from_raw(master), signal).unwrap();
    }

    /// The master's live worker processes, oldest first.
    pub fn workers(&self) -> Vec<i32> {
        let Some(master) = self.master_pid() else {
            return Vec::new();
        };
        let name = process_name(master);
        children_of(master)
            .into_iter()
            .filter(|child| !child.zombie && Some(&child.name) == name.as_ref())
            .map(|child| child.pid)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The log once it holds `text`, waiting up to five seconds: a worker
    /// writes its lines a tenth of a second late at most (LogOutput), so a
    /// check that something is absent from the log first waits for a line
    /// written after it would have been.
    pub async fn log_with(&self, text: &str) -> String {
        let found = crate::helpers::eventually(Duration::from_secs(5), || async {
            self.log().contains(text)
        })
        .await;
        let log = self.log();
        assert!(found, "{text:?} never reached the log:\n{log}");
        log
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
        let master = self.master_pid();
        for pid in self.workers() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(master) = master {
            let _ = kill(Pid::from_raw(master), Signal::SIGKILL);
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

pub struct Process {
    pub pid: i32,
    pub name: String,
    pub zombie: bool,
}

/// Fields of /proc/PID/stat: the name (in parentheses), then state and
/// parent pid.
fn stat(pid: i32) -> Option<(String, String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_owned();
    let parent = fields.next()?.parse().ok()?;
    Some((name, state, parent))
}

/// Nothing listens on `port` any more: a connection is refused at once, not
/// queued on a socket that no one accepts from.
fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn process_name(pid: i32) -> Option<String> {
    stat(pid).map(|(name, _, _)| name)
}

/// Processes whose parent is `parent` (from /proc), zombies included, by
/// ascending pid.
pub fn children_of(parent: i32) -> Vec<Process> {
    let mut children: Vec<Process> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (name, state, ppid) = stat(pid)?;
            (ppid == parent).then_some(Process {
                pid,
                name,
                zombie: state == "Z",
            })
        })
        .collect();
    children.sort_unstable_by_key(|child| child.pid);
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
    let first = free_ports(2);
    // As many requests as the reload takes, from one address: more than its
    // budget on a fast machine, and a 429 is not what this is about.
    let first_port = first.to_string();
    let env = [
        ("FIRST_WORKER_PORT", first_port.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let served = Served::start(2, &env).await;
    let before = served.workers();
    let ports = [served.port, first, first + 1];
    let (mut ok, mut failed) = (0, 0);

    served.signal(Signal::SIGHUP);
    let deadline = Instant::now() + PATIENCE;
    let mut replaced_at = None;
    // Keep sending, to the shared port and to each worker's, until the old
    // workers have been gone for a moment.
    for port in ports.iter().cycle() {
        if Instant::now() > deadline {
            break;
        }
        match served.get_at(*port, "/v1/hello").await {
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
    let (served, env_file) = Served::from_env_file("WORKERS=1\n").await;

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
async fn sighup_with_settings_that_cannot_work_leaves_the_workers_serving() {
    let (served, env_file) = Served::from_env_file("WORKERS=1\n").await;
    let before = served.workers();

    // One the master reads (WORKERS), and one only a worker's check does:
    // the master leaves that to the reload's probe.
    for (bad, why) in [
        ("WORKERS=0\n", "SIGHUP: the new settings are invalid"),
        (
            "WORKERS=1\nDATABASE_POOL_SIZE=0\n",
            "DATABASE_POOL_SIZE must be at least 1",
        ),
    ] {
        std::fs::write(env_file.path(), bad).unwrap();
        served.signal(Signal::SIGHUP);

        served.log_with(why).await;
        assert_eq!(served.workers(), before, "{bad:?} replaced the workers");
        assert_eq!(served.get("/v1/hello").await, Some(200));
    }
    served
        .log_with("SIGHUP: the binary on disk does not start with these settings")
        .await;
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_the_master_exits_0() {
    let mut served = Served::start(1, &[("GRACEFUL_TIMEOUT", "10")]).await;
    let slow = {
        let client = served.client.clone();
        let url = format!("{}/__test/sleep?ms=3000", served.base);
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    // Time for the worker to take the request, even on a loaded machine;
    // the request still has 2 s to go.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    served.signal(Signal::SIGTERM);

    // New clients are turned away at once while the slow request finishes.
    let closed = eventually(Duration::from_secs(1), || async { refused(served.port) }).await;
    assert!(closed, "still taking connections while draining");
    assert!(!slow.is_finished());
    assert_eq!(slow.await.unwrap().ok(), Some(200), "{}", served.log());
    let status = served.exit_status(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", served.log());
}

#[tokio::test]
async fn a_worker_whose_every_runtime_thread_is_blocked_is_replaced_while_the_others_answer() {
    let first = free_ports(2);
    let first_port = first.to_string();
    let env = [
        ("THREADS", "2"),
        ("WORKER_TIMEOUT", "2"),
        ("FIRST_WORKER_PORT", first_port.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let served = Served::start(2, &env).await;
    let stuck = served.worker_at(first).await.unwrap();
    let other = served.worker_at(first + 1).await.unwrap();

    // Two requests, each blocking the runtime thread that runs it, as a
    // blocking call in a handler would: nothing in the worker runs now.
    let hang = || {
        served
            .client
            .get(format!("http://127.0.0.1:{first}/__test/hang"))
            .timeout(Duration::from_millis(300))
            .send()
    };
    let _ = tokio::join!(hang(), hang());
    let answer = served
        .client
        .get(format!("http://127.0.0.1:{first}/__test/pid"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(answer.is_err(), "not every thread is blocked: {answer:?}");
    let blocked_at = Instant::now();

    let ports = [served.port, first + 1];
    let (ok, failed, replaced) =
        stream_until(&served, &ports, || !served.workers().contains(&stuck)).await;

    assert!(replaced, "the blocked worker lives on:\n{}", served.log());
    let took = blocked_at.elapsed();
    assert!(
        took < Duration::from_secs(2 + 3),
        "replaced {took:?} after blocking, WORKER_TIMEOUT is 2 s"
    );
    assert_eq!(failed, 0, "{ok} requests answered, {failed} failed");
    assert!(served.log().contains("worker killed for timeout"));
    assert!(
        served.workers().contains(&other),
        "the other worker went too"
    );
    let new = eventually(PATIENCE, || async {
        served
            .worker_at(first)
            .await
            .is_some_and(|pid| pid != stuck)
    })
    .await;
    assert!(new, "no new worker on the slot:\n{}", served.log());
}

/// The heartbeat must come from every runtime thread: a thread stuck in
/// one poll strands whatever is queued on it, even while the worker's other
/// thread answers.
#[tokio::test]
async fn a_worker_with_one_runtime_thread_stuck_is_replaced_though_the_other_answers() {
    let env = [("THREADS", "2"), ("WORKER_TIMEOUT", "2")];
    let served = Served::start(1, &env).await;
    let stuck = served.workers()[0];

    let _ = served
        .client
        .get(format!("{}/__test/hang", served.base))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert_eq!(served.get("/v1/hello").await, Some(200), "{}", served.log());

    let replaced = eventually(PATIENCE, || async {
        let workers = served.workers();
        workers.len() == 1 && workers[0] != stuck && served.get("/healthz").await == Some(200)
    })
    .await;
    assert!(replaced, "the stuck worker lives on:\n{}", served.log());
    assert!(served.log().contains("worker killed for timeout"));
}

/// Sends requests round `ports` until `done` has held for half a second,
/// or PATIENCE runs out: the answers, the failures, and whether `done` held.
async fn stream_until(
    served: &Served,
    ports: &[u16],
    mut done: impl FnMut() -> bool,
) -> (usize, usize, bool) {
    let deadline = Instant::now() + PATIENCE;
    let (mut ok, mut failed) = (0, 0);
    let mut done_at = None;
    for port in ports.iter().cycle() {
        if Instant::now() > deadline {
            break;
        }
        match served.get_at(*port, "/v1/hello").await {
            Some(200) => ok += 1,
            _ => failed += 1,
        }
        if done_at.is_none() && done() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|at| at.elapsed() > Duration::from_millis(500)) {
            break;
        }
    }
    (ok, failed, done_at.is_some())
}

/// A deploy on a VM: a directory holding the binary the master starts
/// from, under the service's name (workers are told by process name).
struct Deploy {
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Deploy {
    fn new() -> Deploy {
        let dir = tempfile::tempdir().unwrap();
        let built = built_binary();
        let binary = dir.path().join(built.file_name().unwrap());
        let deploy = Deploy { dir, binary };
        deploy.release("");
        deploy
    }

    /// Puts a build in place the way `install` does: written beside, then
    /// renamed over the old path (a running binary cannot be written to).
    /// `marker`, appended, makes the file differ (an ELF ignores trailing
    /// bytes). Returns the new file's identity.
    fn release(&self, marker: &str) -> (u64, u64) {
        let mut bytes = std::fs::read(built_binary()).unwrap();
        bytes.extend_from_slice(marker.as_bytes());
        self.put(&bytes)
    }

    /// A build that does not start: it says why and exits 1.
    fn release_broken(&self) {
        self.put(b"#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n");
    }

    fn put(&self, bytes: &[u8]) -> (u64, u64) {
        let staged = self.binary.with_extension("staged");
        std::fs::write(&staged, bytes).unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&staged, &self.binary).unwrap();
        file_identity(&self.binary).unwrap()
    }
}

/// Device and inode: which file, whatever path it has now.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// The file process `pid` runs (it outlives a rename over its path).
fn executable_of(pid: i32) -> Option<(u64, u64)> {
    file_identity(Path::new(&format!("/proc/{pid}/exe")))
}

#[tokio::test]
async fn sighup_starts_workers_from_the_binary_now_on_disk_without_failing_a_request() {
    let deploy = Deploy::new();
    let first = free_ports(2);
    let first_port = first.to_string();
    let env = [
        ("WORKERS", "2"),
        ("FIRST_WORKER_PORT", first_port.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let served = Served::launch_binary(&deploy.binary, &[], 2, &env).await;
    let old = file_identity(&deploy.binary).unwrap();
    let runs = |pids: &[i32], build| pids.iter().all(|pid| executable_of(*pid) == Some(build));
    assert!(runs(&served.workers(), old));

    let new = deploy.release("build two");
    served.signal(Signal::SIGHUP);
    let ports = [served.port, first, first + 1];
    let (ok, failed, switched) = stream_until(&served, &ports, || {
        let workers = served.workers();
        workers.len() == 2 && runs(&workers, new)
    })
    .await;

    assert!(
        switched,
        "the workers do not run the new build:\n{}",
        served.log()
    );
    assert_eq!(failed, 0, "{ok} requests answered, {failed} failed");
    assert!(ok > 10, "only {ok} requests went through the reload");
    every_answer_comes_from(&served, &ports, new).await;
    let master = served.master_pid().unwrap();
    assert_eq!(executable_of(master), Some(old), "the master itself stays");
}

/// A dozen requests round `ports` are each answered by a worker running
/// the file `build`.
async fn every_answer_comes_from(served: &Served, ports: &[u16], build: (u64, u64)) {
    for port in ports.iter().cycle().take(12) {
        let pid = served.worker_at(*port).await.unwrap();
        assert_eq!(executable_of(pid), Some(build), "worker {pid} on {port}");
    }
}

/// Kills, at the end of a test, the master a pid file names and its workers.
struct KillNamedIn<'a>(&'a Path);

impl Drop for KillNamedIn<'_> {
    fn drop(&mut self) {
        let Some(master) = read_pid(self.0) else {
            return;
        };
        for child in children_of(master) {
            let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(master), Signal::SIGKILL);
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Gone, or a zombie that its parent (this test) has not collected.
fn exited(pid: i32) -> bool {
    stat(pid).is_none_or(|(_, state, _)| state == "Z")
}

#[tokio::test]
async fn sigusr2_hands_the_sockets_to_a_new_master_of_the_new_binary_without_failing_a_request() {
    let deploy = Deploy::new();
    let pid_file = deploy.dir.path().join("serve.pid");
    let first = free_ports(2);
    let first_port = first.to_string();
    let pid_path = pid_file.display().to_string();
    let env = [
        ("WORKERS", "2"),
        ("FIRST_WORKER_PORT", first_port.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("PID_FILE", pid_path.as_str()),
    ];
    let mut served = Served::launch_binary(&deploy.binary, &[], 2, &env).await;
    let old_master = served.master_pid().unwrap();
    let written = eventually(PATIENCE, || async {
        read_pid(&pid_file) == Some(old_master)
    })
    .await;
    assert!(written, "no pid file once serving:\n{}", served.log());

    let new = deploy.release("build two");
    served.signal(Signal::SIGUSR2);
    let _new_master = KillNamedIn(&pid_file);
    let ports = [served.port, first, first + 1];
    let (ok, failed, handed_over) = stream_until(&served, &ports, || {
        let Some(master) = read_pid(&pid_file).filter(|pid| *pid != old_master) else {
            return false;
        };
        let workers: Vec<i32> = children_of(master).iter().map(|c| c.pid).collect();
        exited(old_master)
            && executable_of(master) == Some(new)
            && workers.len() == 2
            && workers.iter().all(|pid| executable_of(*pid) == Some(new))
    })
    .await;

    assert!(
        handed_over,
        "no hand-over to the new build:\n{}",
        served.log()
    );
    assert_eq!(failed, 0, "{ok} requests answered, {failed} failed");
    assert!(ok > 10, "only {ok} requests went through the upgrade");
    let status = served.exit_status(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", served.log());
    every_answer_comes_from(&served, &ports, new).await;
}

#[tokio::test]
async fn a_new_binary_that_cannot_start_leaves_the_running_one_serving() {
    let deploy = Deploy::new();
    let env = [("WORKERS", "2"), ("RATE_LIMIT_PER_MINUTE", "0")];
    let served = Served::launch_binary(&deploy.binary, &[], 2, &env).await;
    let before = served.workers();
    let master = served.master_pid().unwrap();
    deploy.release_broken();

    for (signal, why) in [
        (Signal::SIGHUP, "SIGHUP: the binary on disk does not start"),
        (Signal::SIGUSR2, "before it served; this one serves on"),
    ] {
        served.signal(signal);
        let since = Instant::now();
        let (ok, failed, _) = stream_until(&served, &[served.port], || {
            since.elapsed() > Duration::from_secs(2) && served.log().contains(why)
        })
        .await;
        assert_eq!(
            failed, 0,
            "{signal}: {ok} requests answered, {failed} failed"
        );
        assert!(served.log().contains(why), "{signal}:\n{}", served.log());
        assert_eq!(served.workers(), before, "{signal} replaced workers");
        assert_eq!(served.master_pid(), Some(master));
    }
    assert!(served.log().contains("this build is broken"));
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
async fn with_worker_ports_each_worker_has_a_port_of_its_own() {
    let first = free_ports(2);
    let served = Served::start(2, &[("FIRST_WORKER_PORT", &first.to_string())]).await;
    let workers = served.workers();

    let (one, two) = (
        served.worker_at(first).await,
        served.worker_at(first + 1).await,
    );
    assert!(
        one.is_some_and(|pid| workers.contains(&pid)),
        "{one:?} not in {workers:?}"
    );
    assert!(
        two.is_some_and(|pid| workers.contains(&pid)),
        "{two:?} not in {workers:?}"
    );
    assert_ne!(one, two, "both ports reached the same worker");
    for _ in 0..5 {
        assert_eq!(served.worker_at(first).await, one);
        assert_eq!(served.worker_at(first + 1).await, two);
    }
    assert_eq!(served.get("/v1/hello").await, Some(200));

    // One fewer worker: the last slot's port closes, the first keeps its worker.
    served.signal(Signal::SIGTTOU);
    let closed = eventually(PATIENCE, || async { refused(first + 1) }).await;
    assert!(closed, "the given-up port is still open:\n{}", served.log());
    assert_eq!(served.worker_at(first).await, one);
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

#[tokio::test]
async fn orphans_are_reaped_by_the_master() {
    let served = Served::start(1, &[]).await;
    let sleepers = || {
        served
            .master_pid()
            .map(children_of)
            .unwrap_or_default()
            .into_iter()
            .filter(|child| child.name == "sleep")
            .count()
    };

    // A worker's child exits at once, leaving its own child (a short sleep)
    // orphaned: it must come to the master, then be reaped, not left a zombie.
    assert_eq!(served.get("/__test/orphan").await, Some(200));

    let adopted = eventually(Duration::from_secs(5), || async { sleepers() == 1 }).await;
    assert!(adopted, "the orphan was not handed to the master");
    let reaped = eventually(PATIENCE, || async { sleepers() == 0 }).await;
    assert!(reaped, "the orphan was left a zombie:\n{}", served.log());
}

#[tokio::test]
async fn as_pid_1_of_a_pid_namespace_it_serves_and_stops_on_sigterm() {
    let unshare = ["unshare", "--pid", "--fork", "--kill-child"];
    let allowed = Command::new(unshare[0])
        .args(&unshare[1..])
        .arg("true")
        .status()
        .is_ok_and(|status| status.success());
    if !allowed {
        eprintln!("skipped: this user may not create a PID namespace (unshare --pid)");
        return;
    }
    let mut served = Served::launch(&unshare, 2, &[("WORKERS", "2")]).await;
    let master = served.master_pid().expect("the master is running");
    let status = std::fs::read_to_string(format!("/proc/{master}/status")).unwrap();
    let namespaced_pid = status
        .lines()
        .find(|line| line.starts_with("NSpid:"))
        .unwrap();
    assert!(
        namespaced_pid.ends_with("\t1"),
        "not PID 1: {namespaced_pid}"
    );
    assert_eq!(served.get("/v1/hello").await, Some(200));

    // PID 1 ignores signals it has no handler for; the master has them.
    served.signal(Signal::SIGTERM);

    let status = served.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", served.log());
}
