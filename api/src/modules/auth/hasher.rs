//! The password hasher: a helper process that each worker starts from its
//! own binary (`api hasher`, hidden from the help) and that hashes on its
//! threads.
//!
//! The hashes run in a process of their own for the scheduler's sake.
//! Nice values rank threads within one scheduling group only. Under
//! `make local` or from a shell each session is such a group (the kernel's
//! autogroups), and so are nginx, PostgreSQL and Redis. A hash at nice 10
//! inside the worker's group therefore still held a core against a woken
//! nginx until the next tick: the p99 of a paced `/v1/hello` during a login
//! flood was 2.5 to 3 times its p99 alone (docs/benchmarks-notes.md, round
//! six).
//!
//! A process can lead a session of its own and weigh that whole group. With
//! the hashes in a group at nice 10, the same probe's p99 was 2.1 to 3.4 ms
//! against 4.2 to 4.8 with them in the worker (1.4 alone), and logins went
//! as fast or faster (78 to 87 a second against 66 to 76; round seven). At
//! nice 19 the p99 was no better, and a hash got 1.5% of a core against any
//! busy neighbour (a build, another service): logins waited out their
//! deadline. At nice 10 such a neighbour leaves hashing a tenth of a core.
//! Under a container runtime or systemd the groups are cgroups instead,
//! which a process cannot weigh for itself; a hasher there shares its
//! worker's group, as the threads did.
//!
//! The hasher starts at the first hash and is ended once [`Hasher`] has
//! asked for nothing for its idle time, so an idle service holds no
//! hashing memory and no hasher. A worker that is killed takes its hasher
//! with it: the hasher reads the end of its input, finishes what it was
//! asked, and exits.
//!
//! The two talk in JSON lines over the hasher's stdin and stdout, a
//! [`Request`] or a [`Reply`] a line. Both ends are the same build
//! (`/proc/self/exe`), so the format needs no versions.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::passwords::{self, HashError, Threads, IDLE_RELEASE, QUEUED_PER_THREAD};
use crate::telemetry::chain;

/// The hidden subcommand that runs the hasher.
pub(crate) const SUBCOMMAND: &str = "hasher";

/// The nice value of the hasher's scheduling group: a tenth of the weight
/// of each other group, so a hash gives a core up to nginx, PostgreSQL or
/// Redis as they wake, and still gets a tenth of a core from a neighbour
/// that never sleeps (the module's comment has the measurements).
const GROUP_NICE: i32 = 10;

/// What a worker asks of its hasher. No `Debug`: it holds passwords.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Hash {
        id: u64,
        password: String,
    },
    /// `stored` is `None` for a user who does not exist: the dummy hash is
    /// checked instead, at the same cost, and never matches.
    Verify {
        id: u64,
        password: String,
        stored: Option<String>,
    },
    /// The request that asked for `id` is gone: not worth computing.
    Cancel {
        id: u64,
    },
    /// Nothing more will be asked: answer what was, then exit. An input
    /// that ends without it means the worker is gone, and nothing is
    /// answered.
    End,
}

impl Request {
    /// The id a caller waits on, if any.
    fn id(&self) -> Option<u64> {
        match self {
            Request::Hash { id, .. } | Request::Verify { id, .. } | Request::Cancel { id } => {
                Some(*id)
            }
            Request::End => None,
        }
    }

    fn set_id(&mut self, to: u64) {
        if let Request::Hash { id, .. } | Request::Verify { id, .. } | Request::Cancel { id } = self
        {
            *id = to;
        }
    }
}

/// The hasher's answer to the request `.0`.
#[derive(Debug, Serialize, Deserialize)]
struct Reply(u64, Outcome);

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Hashed(String),
    Verified(bool),
    /// Its queue is full: refused at once.
    Busy,
    Failed(String),
    /// Never written: the worker's own word that the request could not be
    /// written to a hasher that had ended, so that it is asked again.
    #[serde(skip)]
    Undelivered,
}

impl Outcome {
    /// An outcome that is not the answer asked for, as the error it is.
    fn into_error(self) -> HashError {
        match self {
            Outcome::Busy => HashError::Busy,
            Outcome::Failed(reason) => HashError::Hasher(reason),
            Outcome::Hashed(_) | Outcome::Verified(_) | Outcome::Undelivered => {
                HashError::Hasher("an answer of the wrong kind".into())
            }
        }
    }
}

/// A worker's side: starts the hasher when there is something to hash, and
/// sends it each hash.
pub(crate) struct Hasher {
    program: PathBuf,
    threads: usize,
    idle: Duration,
    /// The running hasher, if any. Never held across an await.
    link: Mutex<Option<Arc<Link>>>,
}

/// One running hasher.
struct Link {
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

/// What the tasks talking to one hasher share with the callers.
struct Shared {
    /// The callers waiting, by request id. Bounded: a request past
    /// [`Hasher::most_waiting`] is refused as Busy before it is sent.
    waiting: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    /// False once the hasher no longer takes requests (it was idle, or it
    /// ended): the next hash starts a new one.
    open: AtomicBool,
    /// Told when the hasher stopped reading its input, or has not exited
    /// long after its last: it is killed.
    stuck: tokio::sync::Notify,
}

/// A caller's end of its request.
struct Waiter {
    answer: oneshot::Sender<Outcome>,
    /// Whether the request reached the hasher's input. One that did not is
    /// asked again of the next hasher if this one ends; one that did is
    /// lost with it.
    written: bool,
}

impl Shared {
    /// Tells the caller of request `id`, if it waits, to ask again.
    fn undelivered(&self, id: Option<u64>) {
        if let Some(waiter) = id.and_then(|id| self.waiting().remove(&id)) {
            let _ = waiter.answer.send(Outcome::Undelivered);
        }
    }

    fn written(&self, id: Option<u64>) {
        if let Some(id) = id {
            if let Some(waiter) = self.waiting().get_mut(&id) {
                waiter.written = true;
            }
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hasher {
    /// A hasher started from `program` with `threads` hashing threads when
    /// needed, and ended after `idle` with nothing asked.
    pub(crate) fn new(program: PathBuf, threads: usize, idle: Duration) -> Self {
        Hasher {
            program,
            threads: threads.max(1),
            idle,
            link: Mutex::new(None),
        }
    }

    /// This process's own binary, as the hasher is started from: the very
    /// build that is running, even after a deploy has replaced the file.
    pub(crate) fn this_program() -> PathBuf {
        PathBuf::from("/proc/self/exe")
    }

    /// A new PHC string for `password`.
    pub(crate) async fn hash(&self, password: String) -> Result<String, HashError> {
        match self.ask(|id| Request::Hash { id, password }).await? {
            Outcome::Hashed(hash) => Ok(hash),
            other => Err(other.into_error()),
        }
    }

    /// Whether `password` matches `stored`; the dummy hash, and never a
    /// match, when there is no stored hash.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let request = |id| Request::Verify {
            id,
            password,
            stored,
        };
        match self.ask(request).await? {
            Outcome::Verified(matches) => Ok(matches),
            other => Err(other.into_error()),
        }
    }

    /// As many hashes as may wait for the hasher's threads: what its own
    /// queue holds.
    fn most_waiting(&self) -> usize {
        self.threads * QUEUED_PER_THREAD
    }

    /// Sends the request `make` builds to the hasher (started first if
    /// none runs) and waits for its answer. If the caller stops waiting,
    /// the hasher is told not to compute it.
    async fn ask(&self, make: impl FnOnce(u64) -> Request) -> Result<Outcome, HashError> {
        let mut request = make(0);
        // A second try, on a new hasher, for a request that met one just as
        // it stopped taking requests (idle, or dead and not yet noticed), or
        // that died with it in hand: hashing and checking can be done again.
        // Twice lost is a 500.
        for _ in 0..2 {
            let link = self.link()?;
            let id = link.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let (answer, answered) = oneshot::channel();
            {
                let mut waiting = link.shared.waiting();
                if waiting.len() >= self.most_waiting() {
                    return Err(HashError::Busy);
                }
                waiting.insert(
                    id,
                    Waiter {
                        answer,
                        written: false,
                    },
                );
            }
            let waiting = Waiting {
                link: &link,
                id,
                answered: false,
            };
            request.set_id(id);
            // The writer takes requests as fast as the pipe does; the
            // channel is full only when the hasher stopped reading them.
            match link.requests.try_send(request.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return Err(HashError::Busy),
                Err(mpsc::error::TrySendError::Closed(_)) => continue,
            }
            let outcome = answered.await;
            waiting.done();
            match outcome {
                Ok(Outcome::Undelivered) | Err(_) => continue,
                Ok(outcome) => return Ok(outcome),
            }
        }
        Err(HashError::Lost)
    }

    /// The running hasher, started if there is none or the last one ended.
    fn link(&self) -> Result<Arc<Link>, HashError> {
        let mut held = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = held.as_ref() {
            if link.shared.open.load(Ordering::Acquire) {
                return Ok(Arc::clone(link));
            }
        }
        let link = Arc::new(self.start()?);
        *held = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Starts a hasher, and the two tasks that write its requests and read
    /// its replies. Called with [`Hasher::link`]'s lock held: starting
    /// takes about a millisecond, and starts are rare and one at a time.
    fn start(&self) -> Result<Link, HashError> {
        // Of the worker's environment only what its logs need: not its
        // secrets, and no env file, which could have changed since.
        let logging = ["LOG_FORMAT", "RUST_LOG"]
            .into_iter()
            .filter_map(|name| Some((name, std::env::var_os(name)?)));
        let mut child = Command::new(&self.program)
            .args(["--env-file", "/dev/null", SUBCOMMAND, "--threads"])
            .arg(self.threads.to_string())
            .env_clear()
            .envs(logging)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(HashError::Start)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(HashError::Start(std::io::Error::other(
                "the hasher's pipes were not made",
            )));
        };
        tracing::debug!(pid = child.id(), "password hasher started");
        let shared = Arc::new(Shared {
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            open: AtomicBool::new(true),
            stuck: tokio::sync::Notify::new(),
        });
        let (requests, queue) = mpsc::channel(self.most_waiting());
        tokio::spawn(write_requests(stdin, queue, Arc::clone(&shared), self.idle));
        tokio::spawn(read_replies(stdout, child, Arc::clone(&shared)));
        Ok(Link { requests, shared })
    }
}

/// A caller waiting for request `id`; if it stops waiting before the
/// answer (its request cut off, or the client gone), the hasher is told.
struct Waiting<'a> {
    link: &'a Link,
    id: u64,
    answered: bool,
}

impl Waiting<'_> {
    fn done(mut self) {
        self.answered = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if self.link.shared.waiting().remove(&self.id).is_some() {
            // Best effort: with the channel full the hash is computed for
            // no one, as it would be if the cancel came late.
            let _ = self.link.requests.try_send(Request::Cancel { id: self.id });
        }
    }
}

/// Writes each request to the hasher as a line. After `idle` with nothing
/// asked and no one waiting, it takes no more requests (the next hash
/// starts a new hasher), writes those already queued and [`Request::End`],
/// and closes the hasher's input: the hasher answers them and exits. A
/// request that cannot be written (the hasher has ended) is handed back to
/// its caller as [`Outcome::Undelivered`], with every one queued behind it;
/// a hasher that takes no input for [`WRITE_PATIENCE`] is killed.
async fn write_requests(
    mut stdin: ChildStdin,
    mut queue: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    idle: Duration,
) {
    let mut closing = false;
    loop {
        let request = if closing {
            match queue.recv().await {
                Some(request) => request,
                None => Request::End,
            }
        } else {
            match tokio::time::timeout(idle, queue.recv()).await {
                Ok(Some(request)) => request,
                // The worker let go of this hasher: it exits at the end of
                // its input.
                Ok(None) => break,
                Err(_) if shared.waiting().is_empty() => {
                    shared.open.store(false, Ordering::Release);
                    queue.close();
                    closing = true;
                    continue;
                }
                Err(_) => continue,
            }
        };
        let end = matches!(request, Request::End);
        match tokio::time::timeout(WRITE_PATIENCE, write_line(&mut stdin, &request)).await {
            Ok(Ok(())) if end => {
                // Its input ends here. It answers what it was asked within
                // a minute (`serve`), then exits; if it has not, it is
                // killed.
                drop(stdin);
                tokio::time::sleep(Duration::from_secs(65)).await;
                shared.stuck.notify_one();
                break;
            }
            Ok(Ok(())) => shared.written(request.id()),
            failed => {
                shared.open.store(false, Ordering::Release);
                if failed.is_err() {
                    shared.stuck.notify_one();
                }
                queue.close();
                shared.undelivered(request.id());
                while let Ok(request) = queue.try_recv() {
                    shared.undelivered(request.id());
                }
                break;
            }
        }
    }
}

/// How long a write to the hasher may wait for room in the pipe: it reads
/// each line as it comes, so a full pipe for this long is a hasher stopped
/// or wedged.
const WRITE_PATIENCE: Duration = Duration::from_secs(5);

async fn write_line(stdin: &mut ChildStdin, request: &Request) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await
}

/// Hands each reply to its caller. When the hasher's output ends, a caller
/// whose request it had been given learns the hash is lost, and one whose
/// request it never got asks the next hasher; the hasher is reaped, and an
/// end other than the one asked for is logged.
async fn read_replies(stdout: ChildStdout, mut child: Child, shared: Arc<Shared>) {
    // Lines are the hasher's own replies: a hash or a short reason each.
    let mut lines = BufReader::new(stdout).lines();
    let mut broken = None;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = shared.stuck.notified() => {
                broken = Some("it stopped reading its input".to_owned());
                break;
            }
        };
        match line {
            Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                Ok(Reply(id, outcome)) => {
                    if let Some(waiter) = shared.waiting().remove(&id) {
                        let _ = waiter.answer.send(outcome);
                    }
                }
                Err(err) => {
                    broken = Some(format!("an unreadable reply: {err}"));
                    break;
                }
            },
            Ok(None) => break,
            Err(err) => {
                broken = Some(format!("its output failed: {err}"));
                break;
            }
        }
    }
    shared.open.store(false, Ordering::Release);
    let mut lost = 0;
    for (_, waiter) in std::mem::take(&mut *shared.waiting()) {
        if waiter.written {
            lost += 1;
        } else {
            let _ = waiter.answer.send(Outcome::Undelivered);
        }
    }
    // Exiting after its output closed takes it a moment; a hasher gone
    // wrong, or one that takes longer, is killed.
    let exited = match broken {
        None => tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .ok(),
        Some(_) => None,
    };
    let status = match exited {
        Some(status) => status,
        None => {
            let _ = child.kill().await;
            child.wait().await
        }
    };
    let clean = broken.is_none() && lost == 0 && status.as_ref().is_ok_and(|s| s.success());
    if clean {
        tracing::debug!("password hasher ended");
    } else {
        let status = status.map_or_else(|err| err.to_string(), |status| status.to_string());
        tracing::warn!(
            status,
            broken,
            lost,
            "the password hasher ended unasked; the next hash starts another"
        );
    }
}

/// Runs the hasher: reads requests from stdin until it ends, hashes them on
/// `threads` threads, writes each reply to stdout; then finishes what it
/// was asked and returns.
pub(crate) fn serve(threads: usize) -> std::io::Result<()> {
    // Started as /proc/self/exe, it would show in `ps` and `top` as `exe`.
    let name: String = format!("{}-hasher", env!("CARGO_PKG_NAME"))
        .chars()
        .take(15)
        .collect();
    let _ = std::fs::write("/proc/self/comm", name);
    join_a_group_of_its_own();
    let hashing = Threads::new(threads, QUEUED_PER_THREAD, IDLE_RELEASE);
    let replies = Arc::new(Replies::default());
    let cancelled: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let most_cancelled = threads.max(1) * QUEUED_PER_THREAD;
    let mut ended = false;
    for line in std::io::stdin().lock().lines() {
        let request: Request = serde_json::from_str(&line?)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?;
        let (id, work): (u64, Work) = match request {
            Request::Cancel { id } => {
                let mut cancelled = cancelled.lock().unwrap_or_else(PoisonError::into_inner);
                // A cancel can come after its hash was computed, and
                // would stay: past the bound the oldest are forgotten
                // wholesale, and at worst a hash is computed for no one.
                if cancelled.len() >= most_cancelled {
                    cancelled.clear();
                }
                cancelled.insert(id);
                continue;
            }
            Request::End => {
                ended = true;
                continue;
            }
            Request::Hash { id, password } => (
                id,
                Box::new(
                    move |memory| match passwords::hash_with(memory, &password) {
                        Ok(hash) => Outcome::Hashed(hash),
                        Err(err) => Outcome::Failed(chain(&err)),
                    },
                ),
            ),
            Request::Verify {
                id,
                password,
                stored,
            } => (
                id,
                Box::new(move |memory| {
                    match passwords::verify_or_dummy(memory, &password, stored.as_deref()) {
                        Ok(matches) => Outcome::Verified(matches),
                        Err(err) => Outcome::Failed(chain(&err)),
                    }
                }),
            ),
        };
        let answer = Answer {
            id,
            replies: Arc::clone(&replies),
            cancelled: Arc::clone(&cancelled),
            running: false,
        };
        replies.begin();
        if let Err(err) = hashing.submit(move |memory| answer.give(work, memory)) {
            let outcome = match err {
                HashError::Busy => Outcome::Busy,
                other => Outcome::Failed(chain(&other)),
            };
            replies.send(&Reply(id, outcome));
            replies.end();
        }
    }
    // Asked to end: answer what was asked, then go. Input that ended
    // without it is a worker gone: no one is left to answer.
    if ended {
        replies.wait_for_all(Duration::from_secs(60));
    }
    Ok(())
}

/// The reply a request owes, from the hashing thread that takes it: its
/// outcome, nothing if it was cancelled meanwhile, or a failure if the hash
/// panicked (the thread goes on). One refused before it ran is answered by
/// whoever queued it.
struct Answer {
    id: u64,
    replies: Arc<Replies>,
    cancelled: Arc<Mutex<HashSet<u64>>>,
    running: bool,
}

type Work = Box<dyn FnOnce(&mut passwords::Memory) -> Outcome + Send>;

impl Answer {
    fn give(mut self, work: Work, memory: &mut passwords::Memory) {
        self.running = true;
        let gone = self
            .cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        if !gone {
            self.replies.send(&Reply(self.id, work(memory)));
        }
        self.replies.end();
        self.running = false;
    }
}

impl Drop for Answer {
    /// Owes a reply only when [`Answer::give`] began and did not finish:
    /// the hash panicked.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let failed = Outcome::Failed("the hashing thread panicked".into());
        self.replies.send(&Reply(self.id, failed));
        self.replies.end();
    }
}

/// The hasher's stdout, written a reply at a time by the hashing threads,
/// and the count of requests not yet answered.
#[derive(Default)]
struct Replies {
    out: Mutex<()>,
    unanswered: Mutex<usize>,
    answered: Condvar,
}

impl Replies {
    fn begin(&self) {
        *self
            .unanswered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn end(&self) {
        let mut unanswered = self
            .unanswered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *unanswered = unanswered.saturating_sub(1);
        self.answered.notify_all();
    }

    fn send(&self, reply: &Reply) {
        let Ok(mut line) = serde_json::to_vec(reply) else {
            return;
        };
        line.push(b'\n');
        let _held = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stdout = std::io::stdout().lock();
        // A worker that stopped reading has ended: nothing to tell it.
        let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
    }

    /// Waits until every request has been answered, for at most `patience`
    /// (a full queue takes seconds).
    fn wait_for_all(&self, patience: Duration) {
        let unanswered = self
            .unanswered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .answered
            .wait_timeout_while(unanswered, patience, |unanswered| *unanswered > 0);
    }
}

/// Moves the hasher into a session of its own, which the kernel makes a
/// scheduling group of its own (an autogroup), and weighs that group at
/// [`GROUP_NICE`]. Without autogroups (a container, a systemd unit) the
/// write changes nothing and the hasher shares its worker's group. From an
/// unprivileged process the kernel takes one such write a tenth of a second
/// machine-wide, so hashers starting together take turns: a few tries, on a
/// thread of their own, while the hasher serves.
fn join_a_group_of_its_own() {
    #[cfg(target_os = "linux")]
    {
        if let Err(err) = nix::unistd::setsid() {
            tracing::debug!(error = %err, "the password hasher keeps its worker's session");
            return;
        }
        let weigh = || {
            let mut last = None;
            for _ in 0..20 {
                match std::fs::write("/proc/self/autogroup", GROUP_NICE.to_string()) {
                    Ok(()) => return,
                    Err(err) if err.raw_os_error() == Some(nix::libc::EAGAIN) => {
                        last = Some(err);
                        std::thread::sleep(Duration::from_millis(110));
                    }
                    Err(err) => {
                        last = Some(err);
                        break;
                    }
                }
            }
            if let Some(err) = last {
                tracing::debug!(error = %err, "the password hasher's group keeps its weight");
            }
        };
        let _ = std::thread::Builder::new()
            .name("hasher-group".into())
            .spawn(weigh);
    }
}
