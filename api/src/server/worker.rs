//! One worker process: the app on its own tokio runtime, accepting from the
//! sockets it inherited from the master, heartbeating down a pipe while
//! every thread of its runtime makes progress.

use std::hash::BuildHasher;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use poem::endpoint::BoxEndpoint;
use poem::EndpointExt;
use tokio::sync::Notify;

use super::{handoff, ServeArgs};
use crate::metrics::shared::SharedDir;
use crate::metrics::Metrics;
use crate::startup::Application;
use crate::state::AppState;
use crate::telemetry;

/// Exit status of a worker that could not start (bad settings, no socket).
pub const EXIT_STARTUP_FAILED: i32 = 3;

/// The worker's async runtime. With one thread (THREADS's default when
/// there are as many workers as cores) it is tokio's single-threaded
/// scheduler, on the thread that runs the server: no work stealing, and
/// no hand-off between a thread that accepts and one that serves, which
/// cost 7% of `/v1/hello`'s CPU a request and 13% of `/getName`'s
/// (docs/benchmarks.md). That thread also accepts and listens for signals,
/// so a handler that blocks it stops those too: the heartbeat stops with
/// them, and the master replaces the worker after WORKER_TIMEOUT.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

/// Completes on SIGTERM (drain and stop) or SIGINT; for single-process mode.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        },
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs a worker until it is told to stop or has served its request budget,
/// and returns its exit status. The master started this process from the
/// binary on disk, handing it `sockets`, the `heartbeat` pipe and the
/// `metrics` directory.
pub fn run(
    sockets: &[RawFd],
    heartbeat: RawFd,
    metrics: PathBuf,
    args: &ServeArgs,
    id: u64,
) -> i32 {
    // First thing: a stop signal before the runtime listens must not be
    // lost (nor kill the worker, as the default action would).
    let early = match EarlySignals::register() {
        Ok(early) => early,
        Err(err) => {
            tracing::error!(worker = id, error = %err, "cannot register signal handlers");
            return EXIT_STARTUP_FAILED;
        }
    };
    let inherited = sockets
        .iter()
        .map(|fd| handoff::adopt_socket(*fd))
        .collect::<std::io::Result<Vec<_>>>()
        .and_then(|sockets| Ok((sockets, handoff::adopt_pipe(heartbeat)?)));
    let (sockets, heartbeat) = match inherited {
        Ok(inherited) => inherited,
        Err(err) => {
            tracing::error!(worker = id, error = %err, "worker cannot start");
            return EXIT_STARTUP_FAILED;
        }
    };
    let runtime = match runtime(args.process.threads()) {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(worker = id, error = %err, "cannot start the async runtime");
            return EXIT_STARTUP_FAILED;
        }
    };
    let worker = Worker {
        sockets,
        heartbeat,
        metrics: SharedDir::existing(metrics),
        args: args.clone(),
        id,
    };
    runtime.block_on(serve(worker, early))
}

/// Stop signals received before the async handlers exist.
struct EarlySignals {
    terminate: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
}

impl EarlySignals {
    fn register() -> std::io::Result<EarlySignals> {
        use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
        let early = EarlySignals {
            terminate: Arc::new(AtomicBool::new(false)),
            quit: Arc::new(AtomicBool::new(false)),
        };
        signal_hook::flag::register(SIGTERM, early.terminate.clone())?;
        signal_hook::flag::register(SIGINT, early.quit.clone())?;
        signal_hook::flag::register(SIGQUIT, early.quit.clone())?;
        Ok(early)
    }
}

/// What a worker is given by the master.
struct Worker {
    sockets: Vec<TcpListener>,
    heartbeat: OwnedFd,
    /// Where workers leave their metrics for each other.
    metrics: SharedDir,
    args: ServeArgs,
    id: u64,
}

async fn serve(worker: Worker, early: EarlySignals) -> i32 {
    let Worker {
        sockets,
        heartbeat,
        metrics,
        args,
        id,
    } = worker;
    let application = match Application::from_listeners(sockets, args.settings) {
        Ok(application) => application,
        Err(err) => {
            tracing::error!(worker = id, error = %err, "worker cannot start");
            return EXIT_STARTUP_FAILED;
        }
    };
    let stop = Arc::new(Notify::new());
    let budget = request_budget(args.process.max_requests, args.process.max_requests_jitter);
    let application = application.wrap(|app| {
        let app = count_requests(app, budget, stop.clone());
        #[cfg(feature = "test-hooks")]
        if args.process.test_hooks {
            return with_test_hooks(app);
        }
        app
    });
    let beat_every = (args.process.worker_timeout() / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let runtime = tokio::runtime::Handle::current();
    if let Err(err) = watch(runtime, heartbeat, beat_every, stop.clone()) {
        tracing::error!(worker = id, error = %err, "cannot start the heartbeat");
        return EXIT_STARTUP_FAILED;
    }
    let state = application.state().clone();
    let owner = std::process::id().to_string();
    state.metrics.share_through(metrics.clone(), owner.clone());
    let publishing = tokio::spawn(publish_metrics(
        state.clone(),
        metrics.clone(),
        owner.clone(),
    ));
    let upkeep = tokio::spawn(give_back_memory_when_idle(state.metrics.clone()));
    let result = application.run_until(stopped(stop, early)).await;
    upkeep.abort();
    // The last word: what was counted since the last publish.
    publishing.abort();
    if let Err(err) = metrics.publish(&owner, &state.snapshot()) {
        tracing::warn!(worker = id, error = %err, "cannot publish final metrics");
    }
    match result {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!(worker = id, error = %err, "worker failed");
            1
        }
    }
}

/// A worker's request budget: MAX_REQUESTS plus a jitter drawn per worker,
/// or none.
fn request_budget(max_requests: u64, jitter: u64) -> Option<u64> {
    if max_requests == 0 {
        return None;
    }
    // Any per-process randomness will do; this needs no RNG crate.
    let draw = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    Some(max_requests + draw % (jitter + 1))
}

/// Counts requests and asks for a graceful stop once the budget is spent.
fn count_requests(
    app: BoxEndpoint<'static>,
    budget: Option<u64>,
    stop: Arc<Notify>,
) -> BoxEndpoint<'static> {
    let Some(budget) = budget else {
        return app;
    };
    let served = Arc::new(AtomicU64::new(0));
    app.around(move |endpoint, request| {
        let served = served.clone();
        let stop = stop.clone();
        async move {
            let response = endpoint.call(request).await;
            if served.fetch_add(1, Ordering::Relaxed) + 1 == budget {
                tracing::info!(budget, "served MAX_REQUESTS; recycling this worker");
                stop.notify_one();
            }
            response
        }
    })
    .boxed()
}

/// SIGTERM or a spent budget: drain (the caller applies GRACEFUL_TIMEOUT).
/// SIGINT or SIGQUIT: stop at once, as Gunicorn's quick shutdown does.
async fn stopped(stop: Arc<Notify>, early: EarlySignals) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::error!("worker cannot listen for signals; exiting");
        exit_now(EXIT_STARTUP_FAILED);
    };
    // Listening now; anything that came before is in the flags.
    if early.quit.load(Ordering::Relaxed) {
        exit_now(0);
    }
    if early.terminate.load(Ordering::Relaxed) {
        return;
    }
    tokio::select! {
        _ = terminate.recv() => {}
        _ = stop.notified() => {}
        _ = interrupt.recv() => exit_now(0),
        _ = quit.recv() => exit_now(0),
    }
}

/// Exits without draining, the log lines already written out first.
fn exit_now(code: i32) -> ! {
    telemetry::flush_logs();
    std::process::exit(code)
}

/// How stale another worker's numbers in a scrape can be.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Leaves this worker's metrics where the others' scrapes find them.
async fn publish_metrics(state: AppState, dir: SharedDir, owner: String) {
    let mut ticks = tokio::time::interval(PUBLISH_EVERY);
    loop {
        ticks.tick().await;
        let snapshot = state.snapshot();
        let (dir, owner) = (dir.clone(), owner.clone());
        let published = tokio::task::spawn_blocking(move || dir.publish(&owner, &snapshot)).await;
        if let Ok(Err(err)) = published {
            tracing::warn!(error = %err, "cannot publish metrics");
        }
    }
}

/// How long a worker must have started no request before it gives its
/// free memory back.
const QUIET_FOR: Duration = Duration::from_secs(5);

/// Requests since memory was last given back that make a busy spell. Fewer
/// (health checks and scrapes every few seconds) free too little to be
/// worth faulting the pages back in on the next request.
const BUSY_SPELL: u64 = 1_000;

/// Connections closed since memory was last given back that are worth
/// giving it back again. Idle keep-alive connections outlive the busy spell
/// that opened them (nginx keeps its idle upstream ones for 5 s) and free
/// their buffers when they close, with no request to show for it: tens of
/// KiB each, a few MiB after a burst from many clients.
const CLOSED_SPELL: u64 = 32;

/// Gives the allocator's free memory back once start-up is over, and again
/// after each busy spell or wave of closed connections, once the worker has
/// been quiet for [`QUIET_FOR`].
async fn give_back_memory_when_idle(metrics: Metrics) {
    super::give_back_free_memory();
    let mut quiet = Quiet::default();
    let mut ticks = tokio::time::interval(QUIET_FOR);
    loop {
        ticks.tick().await;
        let seen = Seen {
            started: metrics.requests_started(),
            closed: metrics.connections_closed(),
        };
        if quiet.look(seen) {
            super::give_back_free_memory();
        }
    }
}

/// What a look at the worker sees: requests started and connections
/// closed, since the process began.
#[derive(Clone, Copy, Default)]
struct Seen {
    started: u64,
    closed: u64,
}

/// Whether a look, one a [`QUIET_FOR`], says to give memory back: no
/// request started since the last look, and since memory was last given
/// back (start-up's giving back counts as at zero) at least [`BUSY_SPELL`]
/// requests or [`CLOSED_SPELL`] closed connections.
#[derive(Default)]
struct Quiet {
    last_look: Option<u64>,
    given_back_at: Seen,
}

impl Quiet {
    fn look(&mut self, seen: Seen) -> bool {
        let since = &self.given_back_at;
        let quiet = self.last_look == Some(seen.started)
            && (seen.started.saturating_sub(since.started) >= BUSY_SPELL
                || seen.closed.saturating_sub(since.closed) >= CLOSED_SPELL);
        self.last_look = Some(seen.started);
        if quiet {
            self.given_back_at = seen;
        }
        quiet
    }
}

/// Tells the master, down the heartbeat pipe, that this worker's runtime
/// makes progress: each of its threads is parked (idle) or has moved on
/// since the last look. One thread stuck in a single poll (a handler that
/// blocks it) stops the beats, however well the others answer, and after
/// WORKER_TIMEOUT the master replaces the worker: requests queued behind
/// that thread would wait forever. A thread of its own, not a task: a task
/// only shows that *some* runtime thread is free. A worker whose master
/// died (it is re-parented) stops on its own.
fn watch(
    runtime: tokio::runtime::Handle,
    pipe: OwnedFd,
    every: Duration,
    stop: Arc<Notify>,
) -> std::io::Result<()> {
    // Never block on a full pipe: a missed beat is harmless.
    let flags = fcntl(&pipe, FcntlArg::F_GETFL).map(OFlag::from_bits_truncate)?;
    fcntl(&pipe, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let mut pipe = std::fs::File::from(pipe);
    let master = nix::unistd::getppid();
    let mut progress = Progress::default();
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || loop {
            if nix::unistd::getppid() != master {
                tracing::warn!("the master is gone; stopping");
                stop.notify_one();
                return;
            }
            if progress.every_thread_moves(&runtime.metrics()) {
                let _ = pipe.write(&[1]);
            }
            std::thread::sleep(every);
        })?;
    Ok(())
}

/// What each runtime thread had done at the last look, from tokio's stable
/// metrics: how often it parked or woke (odd while parked) and how long it
/// has been busy. A thread publishes them when it parks and every few dozen
/// polls, so one that is running tasks moves them within a look or two; one
/// held inside a single poll does not.
#[derive(Default)]
struct Progress {
    seen: Vec<(u64, Duration)>,
}

impl Progress {
    fn every_thread_moves(&mut self, metrics: &tokio::runtime::RuntimeMetrics) -> bool {
        let now: Vec<(u64, Duration)> = (0..metrics.num_workers())
            .map(|thread| {
                (
                    metrics.worker_park_unpark_count(thread),
                    metrics.worker_total_busy_duration(thread),
                )
            })
            .collect();
        let parked = |(parks, _): &(u64, Duration)| parks % 2 == 1;
        let moves = self.seen.is_empty()
            || now
                .iter()
                .zip(&self.seen)
                .all(|(now, before)| parked(now) || now != before);
        self.seen = now;
        moves
    }
}

/// Routes the tests use to make a worker slow or stuck, to leave an orphan
/// process, and to see the worker's pid (also in an X-Worker-Pid header).
/// Only in builds with the `test-hooks` feature, which the test command
/// turns on: a release build has none of it.
#[cfg(feature = "test-hooks")]
pub fn with_test_hooks(app: BoxEndpoint<'static>) -> BoxEndpoint<'static> {
    use poem::middleware::SetHeader;
    use poem::web::Query;
    use poem::{handler, Route};

    #[derive(serde::Deserialize)]
    struct Sleep {
        ms: u64,
    }

    #[handler]
    async fn sleep(Query(Sleep { ms }): Query<Sleep>) -> String {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        format!("slept {ms} ms")
    }

    /// One line, written at once, so parallel clients' output never mixes.
    #[handler]
    fn pid() -> String {
        format!("{}\n", std::process::id())
    }

    /// Leaves an orphan: the shell exits at once, its `sleep` lives on for
    /// 2 s, time for a test on a loaded machine to find it with the master.
    #[handler]
    fn orphan() -> String {
        let spawned = std::process::Command::new("sh")
            .args(["-c", "sleep 2 &"])
            .status();
        format!("{spawned:?}\n")
    }

    // Blocks the runtime thread that runs it, as a stuck handler would
    // (a blocking call in async code); the heartbeat must notice.
    let hang = poem::endpoint::make_sync(|_| {
        std::thread::sleep(Duration::from_secs(3600));
        "unreachable"
    });
    // Every answer names its worker, for scripts/measure-load-spread.sh.
    let worker = std::process::id().to_string();
    Route::new()
        .at("/__test/sleep", sleep)
        .at("/__test/pid", pid)
        .at("/__test/orphan", orphan)
        .at("/__test/hang", hang)
        .nest("/", app)
        .with(SetHeader::new().overriding("x-worker-pid", worker))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory is given back once a busy spell is over (a quiet look after
    /// many requests), not while requests come, nor again for the same
    /// spell, nor after a few probes.
    #[test]
    fn memory_is_given_back_once_after_each_busy_spell() {
        let mut quiet = Quiet::default();
        let looks: Vec<bool> = [0, 0, 500, 500, 1500, 1500, 1500, 1600, 1600, 2600, 2600]
            .into_iter()
            .map(|started| quiet.look(Seen { started, closed: 0 }))
            .collect();
        let given_back: Vec<usize> = (0..looks.len()).filter(|&i| looks[i]).collect();
        assert_eq!(given_back, [5, 10], "{looks:?}");
    }

    /// And again once the spell's keep-alive connections have closed, after
    /// the last request: quiet looks only, and not for a few closed ones.
    #[test]
    fn memory_is_given_back_again_once_the_idle_connections_close() {
        let mut quiet = Quiet::default();
        let looks: Vec<bool> = [
            (1500, 0),
            (1500, 0),  // the busy spell's end: given back
            (1500, 10), // a few idle connections close
            (1500, 10),
            (1510, 64), // most close, but requests came meanwhile
            (1510, 64), // quiet again: given back
            (1510, 70),
            (1510, 70),
        ]
        .into_iter()
        .map(|(started, closed)| quiet.look(Seen { started, closed }))
        .collect();
        let given_back: Vec<usize> = (0..looks.len()).filter(|&i| looks[i]).collect();
        assert_eq!(given_back, [1, 5], "{looks:?}");
    }

    /// A runtime thread held inside one poll stops the beat; an idle one
    /// (parked) does not, nor one that keeps running tasks.
    #[test]
    fn a_thread_stuck_in_one_poll_is_seen_and_idle_or_busy_ones_are_not() {
        let runtime = runtime(2).unwrap();
        let metrics = runtime.handle().metrics();
        let mut progress = Progress::default();
        let look = |progress: &mut Progress| {
            std::thread::sleep(Duration::from_millis(100));
            progress.every_thread_moves(&metrics)
        };
        look(&mut progress);
        assert!(look(&mut progress) && look(&mut progress), "idle");

        // Busy until the looks are done, however slow the machine.
        let busy = Arc::new(AtomicBool::new(true));
        let task = runtime.spawn(keep_busy(busy.clone()));
        assert!(look(&mut progress) && look(&mut progress), "busy, yielding");
        busy.store(false, Ordering::Relaxed);
        runtime.block_on(task).unwrap();

        runtime.spawn(async { std::thread::sleep(Duration::from_millis(1_000)) });
        // Some look within the held second sees it, however late a loaded
        // machine starts the task.
        look(&mut progress);
        let seen = (0..5).any(|_| !look(&mut progress));
        assert!(seen, "one thread held in a poll");
    }

    /// The same with one thread, tokio's single-threaded scheduler: its
    /// tasks run on the thread that blocks on the server (here, `serving`).
    #[test]
    fn the_single_threaded_runtime_is_watched_the_same_way() {
        let runtime = Arc::new(runtime(1).unwrap());
        let metrics = runtime.handle().metrics();
        assert_eq!(metrics.num_workers(), 1);
        let mut progress = Progress::default();
        let look = |progress: &mut Progress| {
            std::thread::sleep(Duration::from_millis(100));
            progress.every_thread_moves(&metrics)
        };
        let busy = Arc::new(AtomicBool::new(true));
        let (stuck_tx, stuck_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = std::thread::spawn({
            let (runtime, busy) = (runtime.clone(), busy.clone());
            move || {
                runtime.block_on(async {
                    keep_busy(busy).await;
                    // Idle (parked) until told to get stuck.
                    let _ = stuck_rx.await;
                    std::thread::sleep(Duration::from_millis(1_000));
                })
            }
        });
        look(&mut progress);
        assert!(look(&mut progress) && look(&mut progress), "busy, yielding");
        busy.store(false, Ordering::Relaxed);
        look(&mut progress);
        assert!(look(&mut progress) && look(&mut progress), "idle");
        stuck_tx.send(()).unwrap();
        look(&mut progress);
        let seen = (0..5).any(|_| !look(&mut progress));
        assert!(seen, "the thread held in a poll");
        serving.join().unwrap();
    }

    /// Polls again and again, a little work each time, while `busy` holds.
    async fn keep_busy(busy: Arc<AtomicBool>) {
        while busy.load(Ordering::Relaxed) {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
