//! The master: owns the listening sockets, starts workers, keeps their
//! number right and acts on signals, as Gunicorn's arbiter does. Workers
//! are started from the binary on disk (fork, then exec) with the sockets
//! and a heartbeat pipe handed down (`super::handoff`), so a reload runs a
//! new build; SIGUSR2 starts a whole new master that way. It runs no async
//! runtime and no other thread, so forking it is safe, and it reaps every
//! child (it is a child subreaper), so it can be PID 1 in a container.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR2};
use signal_hook::iterator::Signals;

use super::handoff::{self, Handoff};
use super::{Loaded, Reload, ServeArgs};
use crate::metrics::shared::SharedDir;
use crate::metrics::{CounterFamily, Snapshot};

/// How often the master looks at signals, children and heartbeats.
const TICK: Duration = Duration::from_millis(50);
/// A worker that dies sooner than this after starting counts as a crash.
const CRASH_WINDOW: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long workers get to exit on a quick shutdown before SIGKILL.
const QUICK_STOP: Duration = Duration::from_secs(2);
/// How long a reload's probe of the binary on disk may take.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);
/// How long a new master (SIGUSR2) gets to have all its workers serving,
/// migrations included, at the least: twice WORKER_TIMEOUT when longer.
const UPGRADE_PATIENCE: Duration = Duration::from_secs(60);

struct Worker {
    id: u64,
    generation: u64,
    /// Its place among the workers, 0..WORKERS: with FIRST_WORKER_PORT, the
    /// port it serves besides the shared one. A reload's new worker takes
    /// over the slot of an old one, socket and all.
    slot: usize,
    heartbeat: std::fs::File,
    started: Instant,
    last_beat: Instant,
    /// Has heartbeated at least once: its server is accepting.
    ready: bool,
    /// Told to stop (SIGTERM sent or killed); not counted towards the target.
    leaving: bool,
    /// Why it is being replaced, when told to stop for a reason that
    /// counts as a restart.
    restart: Option<&'static str>,
}

/// Workers replaced: `crash` (died), `timeout` (stopped heartbeating),
/// `max_requests` (recycled) or `reload` (SIGHUP).
const RESTARTS: CounterFamily = CounterFamily {
    name: "worker_restarts_total",
    help: "Worker processes replaced, by reason.",
    label: "reason",
};

/// The name the master's own metrics go by in the shared directory.
const MASTER: &str = "master";

enum Stopping {
    /// SIGTERM: workers drain until the deadline, then are killed.
    Graceful(Instant),
    /// SIGINT/SIGQUIT: workers stop at once, killed if not gone by the deadline.
    Quick(Instant),
}

/// SIGUSR2's new master, until it serves or fails.
struct Upgrade {
    pid: Pid,
    /// It writes a byte here once all its workers serve.
    ready: std::fs::File,
    deadline: Instant,
}

/// What an old master hands a new one (SIGUSR2).
pub struct Inherited {
    shared: TcpListener,
    slots: BTreeMap<usize, TcpListener>,
    ready: std::fs::File,
}

impl Inherited {
    pub fn adopt(ready: RawFd, shared: RawFd, slots: &[(usize, RawFd)]) -> std::io::Result<Self> {
        Ok(Inherited {
            shared: handoff::adopt_socket(shared)?,
            slots: slots
                .iter()
                .map(|(slot, fd)| Ok((*slot, handoff::adopt_socket(*fd)?)))
                .collect::<std::io::Result<_>>()?,
            ready: std::fs::File::from(handoff::adopt_pipe(ready)?),
        })
    }
}

pub struct Master {
    /// The BIND socket every worker serves; none once stopping, so that new
    /// clients are refused rather than queued for workers that are leaving.
    shared: Option<TcpListener>,
    /// FIRST_WORKER_PORT + slot, one socket a slot, kept here so that it
    /// outlives the workers serving it (a replacement takes up the queue).
    slot_sockets: BTreeMap<usize, TcpListener>,
    args: ServeArgs,
    reload: Reload,
    /// The binary workers (and a new master) start from: the path this
    /// master started from, whatever file is there at the time.
    exe: PathBuf,
    argv0: OsString,
    /// The command line after the program's name, less any handoff.
    arguments: Vec<OsString>,
    /// The env file's variables the workers get in their environment.
    environment: Vec<(String, String)>,
    /// SIGUSR2's new master, while it starts.
    upgrade: Option<Upgrade>,
    /// From an old master: where to say this one serves.
    announce: Option<std::fs::File>,
    /// All of the first generation has served: the pid file is written.
    announced: bool,
    signals: Signals,
    workers: BTreeMap<Pid, Worker>,
    target: usize,
    generation: u64,
    next_id: u64,
    crashes: u32,
    spawn_after: Instant,
    stopping: Option<Stopping>,
    killed_on_deadline: bool,
    /// Where workers leave their metrics; see `metrics::shared`.
    metrics: SharedDir,
    /// Counters of workers gone, and the restarts.
    kept_metrics: Snapshot,
}

impl Master {
    /// A master on BIND's socket, or on those an old master handed over.
    pub fn start(
        loaded: Loaded,
        reload: Reload,
        inherited: Option<Inherited>,
    ) -> std::io::Result<Master> {
        let Loaded { args, environment } = loaded;
        let exe = std::env::current_exe().map_err(|err| {
            std::io::Error::new(err.kind(), format!("cannot tell which binary runs: {err}"))
        })?;
        let mut arguments = handoff::Handoff::strip(&std::env::args_os().collect::<Vec<_>>());
        let argv0 = if arguments.is_empty() {
            exe.clone().into_os_string()
        } else {
            arguments.remove(0)
        };
        let (listener, mut slot_sockets, announce) = match inherited {
            Some(Inherited {
                shared,
                slots,
                ready,
            }) => (shared, slots, Some(ready)),
            None => {
                let address = args.settings.bind;
                let listener = TcpListener::bind(address).map_err(|err| {
                    let message = format!("cannot listen on {address}: {err}");
                    std::io::Error::new(err.kind(), message)
                })?;
                (listener, BTreeMap::new(), None)
            }
        };
        if args.process.first_worker_port.is_some() {
            for slot in 0..args.process.workers {
                if let std::collections::btree_map::Entry::Vacant(free) = slot_sockets.entry(slot) {
                    free.insert(bind_slot(&args, slot)?);
                }
            }
        }
        let signals = Signals::new([
            SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR2, SIGTTIN, SIGTTOU, SIGCHLD,
        ])?;
        let metrics_dir = SharedDir::default_path(std::process::id());
        let metrics = SharedDir::create(metrics_dir.clone()).map_err(|err| {
            let shown = metrics_dir.display();
            std::io::Error::new(
                err.kind(),
                format!("cannot make {shown} for metrics: {err}"),
            )
        })?;
        let mut kept_metrics = Snapshot::default();
        for reason in ["crash", "timeout", "max_requests", "reload"] {
            kept_metrics.count(&RESTARTS, reason, 0);
        }
        metrics.publish(MASTER, &kept_metrics)?;
        // Orphans of the workers' own children come to the master to be
        // reaped, as they would to PID 1, even when the master is not PID 1.
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %err, "cannot become a child subreaper");
        }
        tracing::info!(
            address = %listener.local_addr()?,
            first_worker_port = args.process.first_worker_port,
            pid = std::process::id(),
            workers = args.process.workers,
            threads = args.process.threads(),
            "master listening"
        );
        Ok(Master {
            target: args.process.workers,
            shared: Some(listener),
            slot_sockets,
            args,
            reload,
            exe,
            argv0,
            arguments,
            environment,
            upgrade: None,
            announce,
            announced: false,
            signals,
            workers: BTreeMap::new(),
            generation: 0,
            next_id: 1,
            crashes: 0,
            spawn_after: Instant::now(),
            stopping: None,
            killed_on_deadline: false,
            metrics,
            kept_metrics,
        })
    }

    pub fn run(mut self) -> ExitCode {
        loop {
            let pending: Vec<i32> = self.signals.pending().collect();
            for signal in pending {
                self.on_signal(signal);
            }
            self.reap();
            self.read_heartbeats();
            self.kill_silent_workers();
            match self.stopping {
                Some(Stopping::Graceful(deadline) | Stopping::Quick(deadline)) => {
                    if self.workers.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline && !self.killed_on_deadline {
                        tracing::warn!(
                            left = self.workers.len(),
                            "workers did not stop in time; killing them"
                        );
                        self.signal_all(Signal::SIGKILL);
                        self.killed_on_deadline = true;
                    }
                }
                None => {
                    self.keep_worker_count();
                    self.retire_previous_generation();
                    self.announce_when_serving();
                    self.watch_upgrade();
                }
            }
            std::thread::sleep(TICK);
        }
        if let Err(err) = self.metrics.remove() {
            tracing::warn!(error = %err, "cannot remove the metrics directory");
        }
        if let Some(path) = &self.args.process.pid_file {
            remove_pid_file(path);
        }
        tracing::info!("master stopped");
        ExitCode::SUCCESS
    }

    fn on_signal(&mut self, signal: i32) {
        let now = Instant::now();
        match signal {
            SIGTERM if self.stopping.is_none() => self.stop_gracefully("SIGTERM"),
            SIGINT | SIGQUIT => {
                tracing::info!("SIGINT/SIGQUIT: quick shutdown");
                self.stopping = Some(Stopping::Quick(now + QUICK_STOP));
                self.close_sockets();
                self.signal_all(Signal::SIGQUIT);
            }
            SIGHUP if self.stopping.is_none() => self.reload(),
            SIGUSR2 if self.stopping.is_none() => self.upgrade(),
            SIGTTIN if self.stopping.is_none() => {
                self.target += 1;
                tracing::info!(workers = self.target, "SIGTTIN: one more worker");
            }
            SIGTTOU if self.stopping.is_none() => {
                self.target = self.target.saturating_sub(1).max(1);
                self.slot_sockets.split_off(&self.target);
                tracing::info!(workers = self.target, "SIGTTOU: one fewer worker");
            }
            _ => {}
        }
    }

    /// Drains the workers until GRACEFUL_TIMEOUT, then exits.
    fn stop_gracefully(&mut self, why: &str) {
        let grace = Duration::from_secs(self.args.settings.graceful_timeout);
        tracing::info!(?grace, "{why}: draining workers");
        self.stopping = Some(Stopping::Graceful(Instant::now() + grace));
        self.close_sockets();
        self.signal_all(Signal::SIGTERM);
    }

    /// SIGHUP: new settings, a new generation of workers from the binary now
    /// on disk, and the old generation retired once the new one is
    /// accepting. A binary that cannot start with the new settings changes
    /// nothing.
    fn reload(&mut self) {
        match (self.reload)() {
            Ok(Loaded { args, environment }) => {
                if let Err(why) = self.probe(&environment) {
                    tracing::error!(
                        binary = %self.exe.display(),
                        error = %why,
                        "SIGHUP: the binary on disk does not start with these settings; the current workers serve on"
                    );
                    return;
                }
                if args.settings.bind != self.args.settings.bind {
                    tracing::warn!(
                        bind = %args.settings.bind,
                        "BIND changed; the socket stays where it is until a restart"
                    );
                }
                if args.process.first_worker_port != self.args.process.first_worker_port {
                    tracing::warn!(
                        first_worker_port = args.process.first_worker_port,
                        "FIRST_WORKER_PORT changed; worker ports stay as they are until a restart"
                    );
                }
                let mut args = args;
                args.process.first_worker_port = self.args.process.first_worker_port;
                self.target = args.process.workers;
                // Ports of slots no longer wanted close once their workers
                // have left (they hold the last copies).
                self.slot_sockets.split_off(&self.target);
                self.args = args;
                self.environment = environment;
                self.generation += 1;
                tracing::info!(
                    generation = self.generation,
                    workers = self.target,
                    "SIGHUP: reloading"
                );
            }
            Err(err) => {
                tracing::error!(error = %err, "SIGHUP: the new settings are invalid; keeping the old ones")
            }
        }
    }

    /// Runs the binary on disk as a worker would, up to reading and
    /// validating its settings; Ok if it exits 0. It says why not on the
    /// shared stderr.
    fn probe(&self, environment: &[(String, String)]) -> Result<(), String> {
        let mut child = self
            .command(&Handoff::Check, environment, Vec::new())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run it: {err}"))?;
        let deadline = Instant::now() + PROBE_PATIENCE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("it exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("it did not finish within {PROBE_PATIENCE:?}"));
                }
                Err(err) => return Err(format!("cannot wait for it: {err}")),
            }
        }
    }

    /// The binary on disk with this master's command line, `handoff` ahead
    /// of it, `environment` added to this process's own, and `inherit`
    /// passed down.
    fn command(
        &self,
        handoff: &Handoff,
        environment: &[(String, String)],
        inherit: Vec<RawFd>,
    ) -> std::process::Command {
        let mut command = std::process::Command::new(&self.exe);
        command
            .arg0(&self.argv0)
            .arg(handoff::ARGUMENT)
            .arg(handoff.to_string())
            .args(&self.arguments)
            .envs(environment.iter().map(|(name, value)| (name, value)));
        handoff::inherit(&mut command, inherit);
        command
    }

    /// SIGUSR2: a new master from the binary on disk, on these sockets. This
    /// one retires its workers and exits once the new one's serve; if the
    /// new one fails, this one serves on.
    fn upgrade(&mut self) {
        if let Some(upgrade) = &self.upgrade {
            tracing::warn!(new_master = %upgrade.pid, "SIGUSR2: an upgrade is under way already");
            return;
        }
        match self.start_new_master() {
            Ok(upgrade) => {
                tracing::info!(
                    new_master = %upgrade.pid,
                    binary = %self.exe.display(),
                    "SIGUSR2: a new master is starting from the binary on disk"
                );
                self.upgrade = Some(upgrade);
            }
            Err(err) => {
                tracing::error!(error = %err, "SIGUSR2: cannot start a new master; this one serves on")
            }
        }
    }

    fn start_new_master(&self) -> std::io::Result<Upgrade> {
        let Some(shared) = &self.shared else {
            return Err(std::io::Error::other("the master is stopping"));
        };
        let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC)?;
        set_nonblocking(&ready_read)?;
        let slots: Vec<(usize, RawFd)> = self
            .slot_sockets
            .iter()
            .map(|(slot, socket)| (*slot, socket.as_raw_fd()))
            .collect();
        let mut inherit = vec![ready_write.as_raw_fd(), shared.as_raw_fd()];
        inherit.extend(slots.iter().map(|(_, fd)| *fd));
        let handoff = Handoff::Master {
            ready: ready_write.as_raw_fd(),
            shared: shared.as_raw_fd(),
            slots,
        };
        // No environment of ours: a new master reads the env file itself,
        // as a fresh start would.
        let child = self.command(&handoff, &[], inherit).spawn()?;
        let patience = UPGRADE_PATIENCE.max(self.args.process.worker_timeout() * 2);
        Ok(Upgrade {
            pid: child_pid(&child)?,
            ready: std::fs::File::from(ready_read),
            deadline: Instant::now() + patience,
        })
    }

    /// The new master's word: it serves (this one retires), or it failed.
    fn watch_upgrade(&mut self) {
        let Some(upgrade) = &mut self.upgrade else {
            return;
        };
        let pid = upgrade.pid;
        let mut byte = [0u8; 1];
        match upgrade.ready.read(&mut byte) {
            Ok(1..) => {
                self.upgrade = None;
                tracing::info!(new_master = %pid, "SIGUSR2: the new master serves");
                self.stop_gracefully("SIGUSR2: handing over");
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= upgrade.deadline {
                    self.upgrade = None;
                    tracing::error!(
                        new_master = %pid,
                        "SIGUSR2: the new master's workers did not all serve in time; stopping it, this one serves on"
                    );
                    let _ = kill(pid, Signal::SIGQUIT);
                }
            }
            // Closed without a word: it is gone (reaping says how).
            Ok(0) | Err(_) => {
                self.upgrade = None;
                tracing::error!(
                    new_master = %pid,
                    "SIGUSR2: the new master stopped before it served; this one serves on"
                );
            }
        }
    }

    /// Once every worker of the first generation serves: the pid file, and
    /// the old master's cue to retire when this one took over from it.
    fn announce_when_serving(&mut self) {
        if self.announced {
            return;
        }
        let serving = self
            .workers
            .values()
            .filter(|w| w.generation == self.generation && !w.leaving && w.ready)
            .count();
        if serving < self.target {
            return;
        }
        self.announced = true;
        if let Some(path) = &self.args.process.pid_file {
            if let Err(err) = write_pid_file(path) {
                let path = path.display();
                tracing::warn!(error = %err, "cannot write the pid file {path}");
            }
        }
        if let Some(mut old_master) = self.announce.take() {
            tracing::info!("serving; the old master retires");
            let _ = old_master.write_all(&[1]);
        }
    }

    fn keep_worker_count(&mut self) {
        let current: BTreeMap<usize, Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == self.generation && !w.leaving)
            .map(|(pid, w)| (w.slot, *pid))
            .collect();
        if current.len() < self.target && Instant::now() >= self.spawn_after {
            let free = (0..self.target).filter(|slot| !current.contains_key(slot));
            for slot in free.collect::<Vec<_>>() {
                if let Err(err) = self.spawn(slot) {
                    tracing::error!(slot, error = %err, "cannot start a worker");
                    self.note_crash();
                    break;
                }
            }
        }
        // The highest slots go first, and with them the newest workers: the
        // oldest have warm caches and pools.
        for (_, pid) in current.range(self.target..) {
            self.retire(*pid, "fewer workers wanted", None);
        }
    }

    fn retire_previous_generation(&mut self) {
        let ready = self
            .workers
            .values()
            .filter(|w| w.generation == self.generation && !w.leaving && w.ready)
            .count();
        if ready < self.target {
            return;
        }
        let old: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation < self.generation && !w.leaving)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in old {
            self.retire(pid, "replaced by a reload", Some("reload"));
        }
    }

    fn retire(&mut self, pid: Pid, why: &str, restart: Option<&'static str>) {
        if let Some(worker) = self.workers.get_mut(&pid) {
            worker.leaving = true;
            worker.restart = restart;
            tracing::info!(%pid, worker = worker.id, why, "retiring worker");
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    fn spawn(&mut self, slot: usize) -> std::io::Result<()> {
        let Some(shared) = &self.shared else {
            return Err(std::io::Error::other("the master is stopping"));
        };
        let mut sockets = vec![shared.as_raw_fd()];
        if self.args.process.first_worker_port.is_some() {
            if !self.slot_sockets.contains_key(&slot) {
                self.slot_sockets.insert(slot, bind_slot(&self.args, slot)?);
            }
            if let Some(socket) = self.slot_sockets.get(&slot) {
                sockets.push(socket.as_raw_fd());
            }
        }
        // Close-on-exec here, so that only this worker inherits its end
        // (never another slot's socket or another worker's pipe).
        let (beat_read, beat_write) = pipe2(OFlag::O_CLOEXEC)?;
        set_nonblocking(&beat_read)?;
        let id = self.next_id;
        self.next_id += 1;
        let handoff = Handoff::Worker {
            id,
            heartbeat: beat_write.as_raw_fd(),
            sockets: sockets.clone(),
            metrics: self.metrics.path().to_owned(),
        };
        let mut inherit = sockets;
        inherit.push(beat_write.as_raw_fd());
        let child = self.command(&handoff, &self.environment, inherit).spawn()?;
        drop(beat_write);
        let child = child_pid(&child)?;
        let now = Instant::now();
        tracing::info!(pid = %child, worker = id, slot, generation = self.generation, "worker started");
        self.workers.insert(
            child,
            Worker {
                id,
                generation: self.generation,
                slot,
                heartbeat: std::fs::File::from(beat_read),
                started: now,
                last_beat: now,
                ready: false,
                leaving: false,
                restart: None,
            },
        );
        Ok(())
    }

    /// Collects every exited child: workers, and, as PID 1, any orphan.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.on_exit(pid, &format!("exit status {code}"), code == 0)
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.on_exit(pid, &format!("killed by {signal}"), false)
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "waitpid failed");
                    return;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, how: &str, clean: bool) {
        if self
            .upgrade
            .as_ref()
            .is_some_and(|upgrade| upgrade.pid == pid)
        {
            self.upgrade = None;
            tracing::error!(
                new_master = %pid,
                how,
                "SIGUSR2: the new master exited before it served; this one serves on"
            );
            return;
        }
        let Some(worker) = self.workers.remove(&pid) else {
            tracing::debug!(%pid, how, "reaped an orphaned process");
            return;
        };
        self.keep_metrics_of(pid);
        let lived = worker.started.elapsed();
        if worker.leaving || self.stopping.is_some() {
            tracing::info!(%pid, worker = worker.id, how, "worker exited");
            if let Some(reason) = worker.restart.filter(|_| self.stopping.is_none()) {
                self.count_restart(reason);
            }
        } else if clean {
            tracing::info!(%pid, worker = worker.id, how, "worker recycled");
            self.crashes = 0;
            self.count_restart("max_requests");
        } else {
            self.count_restart("crash");
            tracing::warn!(%pid, worker = worker.id, how, ?lived, "worker died; replacing it");
            if lived < CRASH_WINDOW {
                self.note_crash();
            } else {
                self.crashes = 0;
            }
        }
    }

    /// A gone worker's counters live on in the master's metrics.
    fn keep_metrics_of(&mut self, pid: Pid) {
        let gone = pid.to_string();
        if let Err(err) = self.metrics.fold(&gone, MASTER, &mut self.kept_metrics) {
            tracing::warn!(%pid, error = %err, "cannot keep a gone worker's metrics");
        }
    }

    fn count_restart(&mut self, reason: &str) {
        self.kept_metrics.count(&RESTARTS, reason, 1);
        if let Err(err) = self.metrics.publish(MASTER, &self.kept_metrics) {
            tracing::warn!(error = %err, "cannot publish the master's metrics");
        }
    }

    /// Backs off exponentially while workers keep dying young, so a crash
    /// loop (a bad deploy, a dead dependency at start) does not spin.
    fn note_crash(&mut self) {
        self.crashes = self.crashes.saturating_add(1);
        let backoff = Duration::from_millis(100)
            .saturating_mul(1 << self.crashes.min(10))
            .min(MAX_BACKOFF);
        self.spawn_after = Instant::now() + backoff;
        tracing::warn!(
            crashes = self.crashes,
            ?backoff,
            "backing off before the next worker"
        );
    }

    fn read_heartbeats(&mut self) {
        let mut buffer = [0u8; 64];
        for worker in self.workers.values_mut() {
            loop {
                match worker.heartbeat.read(&mut buffer) {
                    Ok(read) if read > 0 => {
                        worker.last_beat = Instant::now();
                        worker.ready = true;
                    }
                    // Nothing more for now (WouldBlock), or the worker closed
                    // its end on exit, which reaping deals with.
                    _ => break,
                }
            }
        }
    }

    /// WORKER_TIMEOUT without a heartbeat: the worker is stuck; replace it.
    fn kill_silent_workers(&mut self) {
        let timeout = self.args.process.worker_timeout();
        for (pid, worker) in self.workers.iter_mut() {
            if worker.last_beat.elapsed() > timeout && !worker.leaving {
                tracing::warn!(%pid, worker = worker.id, ?timeout, "worker killed for timeout");
                worker.leaving = true;
                worker.restart = Some("timeout");
                let _ = kill(*pid, Signal::SIGKILL);
                // Its replacement is started at once; a hang is not a crash loop.
            }
        }
    }

    /// Stopping: no new connections anywhere. The workers' copies go as they
    /// stop accepting.
    fn close_sockets(&mut self) {
        self.shared = None;
        self.slot_sockets.clear();
    }

    fn signal_all(&mut self, signal: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(*pid, signal);
        }
    }
}

/// The socket of a worker slot: BIND's address, FIRST_WORKER_PORT + slot.
fn bind_slot(args: &ServeArgs, slot: usize) -> std::io::Result<TcpListener> {
    let first = args.process.first_worker_port.unwrap_or_default();
    let port = u16::try_from(usize::from(first) + slot)
        .map_err(|_| std::io::Error::other(format!("no port for worker slot {slot}")))?;
    let mut address = args.settings.bind;
    address.set_port(port);
    TcpListener::bind(address).map_err(|err| {
        std::io::Error::new(err.kind(), format!("cannot listen on {address}: {err}"))
    })
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn child_pid(child: &std::process::Child) -> std::io::Result<Pid> {
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    Ok(Pid::from_raw(pid))
}

/// Written whole or not at all (a new file renamed over the old), so a
/// supervisor never reads half a pid.
fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let staged = path.with_extension("tmp");
    std::fs::write(&staged, format!("{}\n", std::process::id()))?;
    std::fs::rename(&staged, path)
}

/// Removed only while it still names this process: after SIGUSR2 it names
/// the new master.
fn remove_pid_file(path: &Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|pid| pid.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}
