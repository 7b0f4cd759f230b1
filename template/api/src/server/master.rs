//! The master: owns the listening sockets, forks workers, keeps their number
//! right and acts on signals, as Gunicorn's arbiter does. It runs no async
//! runtime and no other thread, so forking it is safe, and it reaps every
//! child (it is a child subreaper), so it can be PID 1 in a container.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult, Pid};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU};
use signal_hook::iterator::Signals;

use super::{worker, ServeArgs};
use crate::metrics::shared::SharedDir;
use crate::metrics::{CounterFamily, Snapshot};

/// Re-reads the env file and the settings, for SIGHUP.
pub type Reload = Box<dyn FnMut() -> Result<ServeArgs, String>>;

/// How often the master looks at signals, children and heartbeats.
const TICK: Duration = Duration::from_millis(50);
/// A worker that dies sooner than this after starting counts as a crash.
const CRASH_WINDOW: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long workers get to exit on a quick shutdown before SIGKILL.
const QUICK_STOP: Duration = Duration::from_secs(2);

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

pub struct Master {
    /// The BIND socket every worker serves; none once stopping, so that new
    /// clients are refused rather than queued for workers that are leaving.
    shared: Option<TcpListener>,
    /// FIRST_WORKER_PORT + slot, one socket a slot, kept here so that it
    /// outlives the workers serving it (a replacement takes up the queue).
    slot_sockets: BTreeMap<usize, TcpListener>,
    args: ServeArgs,
    reload: Reload,
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
    pub fn start(args: ServeArgs, reload: Reload) -> std::io::Result<Master> {
        let address = args.settings.bind;
        let listener = TcpListener::bind(address).map_err(|err| {
            std::io::Error::new(err.kind(), format!("cannot listen on {address}: {err}"))
        })?;
        let mut slot_sockets = BTreeMap::new();
        if args.process.first_worker_port.is_some() {
            for slot in 0..args.process.workers {
                slot_sockets.insert(slot, bind_slot(&args, slot)?);
            }
        }
        let signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD])?;
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
                }
            }
            std::thread::sleep(TICK);
        }
        if let Err(err) = self.metrics.remove() {
            tracing::warn!(error = %err, "cannot remove the metrics directory");
        }
        tracing::info!("master stopped");
        ExitCode::SUCCESS
    }

    fn on_signal(&mut self, signal: i32) {
        let now = Instant::now();
        match signal {
            SIGTERM if self.stopping.is_none() => {
                let grace = Duration::from_secs(self.args.settings.graceful_timeout);
                tracing::info!(?grace, "SIGTERM: draining workers");
                self.stopping = Some(Stopping::Graceful(now + grace));
                self.close_sockets();
                self.signal_all(Signal::SIGTERM);
            }
            SIGINT | SIGQUIT => {
                tracing::info!("SIGINT/SIGQUIT: quick shutdown");
                self.stopping = Some(Stopping::Quick(now + QUICK_STOP));
                self.close_sockets();
                self.signal_all(Signal::SIGQUIT);
            }
            SIGHUP if self.stopping.is_none() => self.reload(),
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

    /// SIGHUP: new settings, a new generation of workers, and the old one
    /// retired once the new one is accepting.
    fn reload(&mut self) {
        match (self.reload)() {
            Ok(args) => {
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
        let mut sockets = vec![shared.try_clone()?];
        if self.args.process.first_worker_port.is_some() {
            if !self.slot_sockets.contains_key(&slot) {
                self.slot_sockets.insert(slot, bind_slot(&self.args, slot)?);
            }
            if let Some(socket) = self.slot_sockets.get(&slot) {
                sockets.push(socket.try_clone()?);
            }
        }
        let (beat_read, beat_write) = pipe()?;
        let flags = OFlag::from_bits_truncate(fcntl(&beat_read, FcntlArg::F_GETFL)?);
        fcntl(&beat_read, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let id = self.next_id;
        self.next_id += 1;
        // SAFETY: the master has a single thread (no async runtime, no
        // helper threads), so the child gets a consistent copy of it.
        match unsafe { fork() }? {
            ForkResult::Child => {
                // Only its own sockets: a copy of another slot's would keep
                // that port open after SIGTTOU has given it up. Likewise the
                // other workers' heartbeat pipes.
                drop(beat_read);
                self.shared = None;
                self.slot_sockets.clear();
                self.workers.clear();
                let metrics = self.metrics.clone();
                let code = worker::run(sockets, beat_write, metrics, &self.args, id);
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                drop(beat_write);
                drop(sockets);
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
        }
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
