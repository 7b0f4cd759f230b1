//! Serving. By default a Gunicorn-style master supervises worker processes
//! that share one listening socket, each running the app on its own tokio
//! runtime; `--no-master` serves from this process instead (for debugging).
//! docs/serving.md explains the model and each setting.

mod handoff;
mod master;
mod worker;

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};

use crate::config::{env_lines, Settings};
use crate::startup::{self, Application};

pub use handoff::Handoff;

/// The settings `serve` runs with, and what of the env file its children
/// need in their environment to read the same ones (`EnvFile::for_children`).
pub struct Loaded {
    pub args: ServeArgs,
    pub environment: Vec<(String, String)>,
}

/// Reads the env file and the command line again, for SIGHUP.
pub type Reload = Box<dyn FnMut() -> Result<Loaded, String>>;

/// How `serve` runs processes. Each setting names its Gunicorn counterpart.
#[derive(Debug, Clone, Args)]
pub struct ProcessSettings {
    /// Worker processes (Gunicorn --workers). SIGTTIN/SIGTTOU add/remove one.
    #[arg(long, env = "WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Async threads per worker (Gunicorn --threads); by default the CPUs are
    /// shared out so that workers x threads matches their number.
    #[arg(long, env = "THREADS")]
    pub threads: Option<usize>,
    /// Seconds a worker may go without a heartbeat before it is killed and
    /// replaced (Gunicorn --timeout).
    #[arg(long = "worker-timeout", env = "WORKER_TIMEOUT", default_value_t = 30)]
    pub worker_timeout: u64,
    /// Requests after which a worker is replaced, 0 for never (Gunicorn
    /// --max-requests).
    #[arg(long = "max-requests", env = "MAX_REQUESTS", default_value_t = 0)]
    pub max_requests: u64,
    /// Up to this many more requests, drawn per worker, so that workers do
    /// not all restart at once (Gunicorn --max-requests-jitter).
    #[arg(
        long = "max-requests-jitter",
        env = "MAX_REQUESTS_JITTER",
        default_value_t = 0
    )]
    pub max_requests_jitter: u64,
    /// Give each worker a port of its own as well, this one and the next
    /// WORKERS-1, so that nginx can balance across workers (docs/serving.md,
    /// "Load spread"). The shared BIND socket is served either way.
    #[arg(long = "first-worker-port", env = "FIRST_WORKER_PORT")]
    pub first_worker_port: Option<u16>,
    /// Serve from this one process, with no master and no workers.
    #[arg(long = "no-master", env = "NO_MASTER")]
    pub no_master: bool,
    /// Where the master writes its pid once its workers serve, and a new
    /// master (SIGUSR2) writes its own when it takes over (Gunicorn --pid).
    #[arg(long = "pid-file", env = "PID_FILE", value_name = "PATH")]
    pub pid_file: Option<std::path::PathBuf>,
    /// Test-only routes under /__test (slow, hung and pid probes). Only in
    /// builds with the `test-hooks` feature, which `make test` turns on.
    #[cfg(feature = "test-hooks")]
    #[arg(long = "test-hooks", env = "TEST_HOOKS", hide = true)]
    pub test_hooks: bool,
}

impl ProcessSettings {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            (cpus / self.workers.max(1)).max(1)
        })
    }

    pub fn worker_timeout(&self) -> Duration {
        Duration::from_secs(self.worker_timeout)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("WORKERS must be at least 1".into());
        }
        if self.threads == Some(0) {
            return Err("THREADS must be at least 1".into());
        }
        if let Some(first) = self.first_worker_port {
            if first == 0 || usize::from(first) + self.workers - 1 > usize::from(u16::MAX) {
                return Err("FIRST_WORKER_PORT: the worker ports must lie in 1..=65535".into());
            }
        }
        if self.worker_timeout == 0 {
            return Err("WORKER_TIMEOUT must be at least 1 second".into());
        }
        Ok(())
    }

    /// The settings in effect, one `NAME=value` a line.
    pub fn describe(&self) -> String {
        env_lines(&[
            ("WORKERS", self.workers.to_string()),
            ("THREADS", self.threads().to_string()),
            ("WORKER_TIMEOUT", self.worker_timeout.to_string()),
            ("MAX_REQUESTS", self.max_requests.to_string()),
            ("MAX_REQUESTS_JITTER", self.max_requests_jitter.to_string()),
            (
                "FIRST_WORKER_PORT",
                self.first_worker_port
                    .map_or_else(String::new, |port| port.to_string()),
            ),
            ("NO_MASTER", self.no_master.to_string()),
            (
                "PID_FILE",
                self.pid_file
                    .as_ref()
                    .map_or_else(String::new, |path| path.display().to_string()),
            ),
        ])
    }
}

/// Everything `serve` takes.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub process: ProcessSettings,
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<(), String> {
        self.process.validate()?;
        self.settings.validate()
    }
}

/// Serves until told to stop; `reload` re-reads the settings on SIGHUP.
/// `handoff` is what the master that started this process gave it: this is
/// one of its workers, a new master taking over, or a reload's probe.
pub fn run(loaded: Loaded, handoff: Option<Handoff>, reload: Reload) -> ExitCode {
    return_large_blocks_at_once();
    let args = &loaded.args;
    // A process about to serve, or a reload's probe, checks all its settings
    // itself; a master only its own, and the rest in a child (below).
    let serves_here =
        args.process.no_master || matches!(handoff, Some(Handoff::Worker { .. } | Handoff::Check));
    let checked = if serves_here {
        args.validate()
    } else {
        args.process.validate()
    };
    if let Err(err) = checked {
        eprintln!("error: {err}");
        return ExitCode::from(INVALID_SETTINGS);
    }
    let inherited = match handoff {
        Some(Handoff::Check) => return ExitCode::SUCCESS,
        Some(Handoff::Worker {
            id,
            heartbeat,
            sockets,
            metrics,
        }) => {
            let code = worker::run(&sockets, heartbeat, metrics, args, id);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Some(Handoff::Master {
            ready,
            shared,
            slots,
        }) => match master::Inherited::adopt(ready, shared, &slots) {
            Ok(inherited) => Some(inherited),
            Err(err) => {
                eprintln!("error: cannot take over the old master's sockets: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    if args.process.no_master {
        return run_single(loaded.args);
    }
    match prepare_in_a_child(args) {
        0 => {}
        INVALID_SETTINGS => return ExitCode::from(INVALID_SETTINGS),
        _ => return ExitCode::FAILURE,
    }
    match master::Master::start(loaded, reload, inherited) {
        Ok(master) => master.run(),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks of 1 MiB and more get memory of their own from the system, and
/// give it back when freed. glibc starts out this way (from 128 KiB), but
/// raises the threshold to the size of the first such block freed, up to
/// 32 MiB; after that, blocks up to that size came from the heap and stayed
/// there when freed: a worker held 40 MiB more, for good, after its first
/// burst of 19 MiB blocks (docs/benchmarks.md). Setting the threshold keeps
/// it where it is. Other allocators (musl's) unmap large blocks when they
/// are freed already.
fn return_large_blocks_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; called at
    // start, before this process allocates anything large.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// Gives the allocator's free memory back to the system: glibc keeps what
/// was freed in its heaps for the next allocation, and trims only the top
/// of each. A worker just started holds about 1.4 MiB freed by start-up (the
/// OpenAPI documents built and checked), one that served a burst about 2
/// MiB freed since (docs/benchmarks.md); `malloc_trim` returns every whole
/// free page. Its work grows with the heap (a few MiB here), and it runs
/// only when the worker has been idle, so it is called directly.
pub(crate) fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: no pointers cross; glibc documents malloc_trim as safe from
    // any thread (MT-Safe), and it is never called from a signal handler.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// `serve`'s exit code when its settings cannot work (as clap's for a bad
/// command line).
const INVALID_SETTINGS: u8 = 2;

/// Checks the settings as the workers will use them (the TLS roots read, the
/// connection settings built), then runs [`migrate`] if MIGRATE_ON_START
/// says so, in a child process; returns its exit code: 0 if all went well,
/// [`INVALID_SETTINGS`], or another (the child has said why).
///
/// Not in the master itself (nor on SIGHUP, where the reload's probe
/// checks). The check runs rustls', tokio-postgres' and redis-rs' code, and
/// the kernel maps the pages around every page of code a process runs: the
/// master held them for good, 1.3 MiB, for a check that runs once
/// (docs/benchmarks.md). An async runtime, which the migrations need, leaves
/// process-wide state behind, tokio's signal pipe among it, and workers
/// forked with a shared copy of that pipe steal each other's signals.
fn prepare_in_a_child(args: &ServeArgs) -> u8 {
    use nix::unistd::{fork, ForkResult};

    // SAFETY: nothing but this thread exists yet (no runtime, no worker),
    // and the child only checks, migrates and exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            if let Err(err) = args.settings.validate() {
                eprintln!("error: {err}");
                std::process::exit(INVALID_SETTINGS.into());
            }
            if !args.settings.migrate_on_start {
                std::process::exit(0);
            }
            let migrated = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| format!("cannot start the async runtime: {err}"))
                .and_then(|runtime| runtime.block_on(migrate(args)));
            let code = match migrated {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("error: {err}");
                    1
                }
            };
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => wait_for_preparation(child),
        Err(err) => {
            eprintln!("error: cannot start the start-up checks: {err}");
            1
        }
    }
}

/// Waits for the preparing child and returns its exit code (1 if it was
/// killed). A stop signal meanwhile (the master may be PID 1 of a
/// container, where the default action of SIGTERM is nothing) is passed on
/// to it, and start-up ends there.
fn wait_for_preparation(child: nix::unistd::Pid) -> u8 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

    let stop = Arc::new(AtomicBool::new(false));
    let handlers: Vec<_> = [SIGTERM, SIGINT, SIGQUIT]
        .into_iter()
        .filter_map(|signal| signal_hook::flag::register(signal, stop.clone()).ok())
        .collect();
    let mut pause = Duration::from_millis(1);
    let code = loop {
        if stop.swap(false, Ordering::Relaxed) {
            tracing::info!("stop signal during the start-up checks or migrations: stopping them");
            let _ = kill(child, Signal::SIGTERM);
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break u8::try_from(code).unwrap_or(1),
            Ok(WaitStatus::Signaled(..)) => break 1,
            // Often a few milliseconds (a check, no migration to apply):
            // looked at often at first, every 50 ms after.
            Ok(_) | Err(nix::errno::Errno::EINTR) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(err) => {
                eprintln!("error: cannot wait for the start-up checks: {err}");
                break 1;
            }
        }
    };
    for handler in handlers {
        signal_hook::low_level::unregister(handler);
    }
    code
}

/// Brings the schema up to date before serving; says why it cannot.
async fn migrate(args: &ServeArgs) -> Result<(), String> {
    startup::migrate_before_serving(&args.settings.database)
        .await
        .map_err(|err| {
            let err = crate::error::chain(&err);
            tracing::error!(error = %err, "migrations failed; not serving");
            format!("migrations failed, not serving: {err}")
        })
}

/// The app in this process until SIGTERM or Ctrl-C.
fn run_single(args: ServeArgs) -> ExitCode {
    let runtime = match worker::runtime(args.process.threads()) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if args.settings.migrate_on_start {
            migrate(&args).await?;
        }
        #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
        let mut app = Application::build(args.settings).await?;
        #[cfg(feature = "test-hooks")]
        if args.process.test_hooks {
            app = app.wrap(worker::with_test_hooks);
        }
        tracing::info!(address = %app.local_addr(), "listening (no master)");
        app.run_until(worker::stop_signal()).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", crate::error::chain(&*err));
            ExitCode::FAILURE
        }
    }
}
