//! Password hashing with argon2id, off the async threads, on a fixed set of
//! HASH_CONCURRENCY hashing threads: in a helper process of the worker's
//! by default ([`super::hasher`], which says why), or in the worker itself.
//! The memory argon2 works in (19 MiB at the parameters below) is reused
//! from hash to hash, so hashing memory is bounded by the thread count
//! however many logins arrive: allocating it afresh per hash left each
//! blocking-pool thread's allocator arena holding its own copy (753 MiB at
//! peak under a login flood, in docs/benchmarks.md). Memory no hash has
//! used for [`IDLE_RELEASE`] is given back to the system, so a service that
//! saw a burst of logins an hour ago does not hold it still. A login flood
//! queues instead of starving every request or the container's memory.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
#[cfg(any(test, feature = "test-hooks"))]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use super::hasher::Hasher;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the hashing threads are gone")]
    Closed,
    #[error("too many passwords are waiting to be checked")]
    Busy,
    #[error("the hash was lost: its thread panicked, or its hasher process ended")]
    Lost,
    #[error("could not start the password hasher process")]
    Start(#[source] std::io::Error),
    #[error("the password hasher process failed: {0}")]
    Hasher(String),
    #[error("the stored password hash cannot be read")]
    Stored(#[source] argon2::password_hash::Error),
    #[error(
        "the stored password hash asks for {0}, more than m={MAX_MEMORY_KIB},t={MAX_ITERATIONS},p={MAX_PARALLELISM}"
    )]
    TooCostly(String),
    #[error("argon2 failed")]
    Argon2(#[source] argon2::Error),
}

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;
const OUTPUT_BYTES: usize = 32;

/// The most a stored hash may ask for (its own `m=`, `t=`, `p=`): hashes
/// made with older, cheaper settings verify, and no row can make a hashing
/// thread hold more memory, or stay busy longer, than this.
const MAX_MEMORY_KIB: u32 = 4 * MEMORY_KIB;
const MAX_ITERATIONS: u32 = 4 * ITERATIONS;
const MAX_PARALLELISM: u32 = 4 * PARALLELISM;

fn stored_params(params: &Params) -> String {
    format!(
        "m={},t={},p={}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    )
}

fn params() -> Params {
    // The constants above are within argon2's bounds, so this cannot fail.
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, Some(OUTPUT_BYTES))
        .expect("argon2 parameters are valid")
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Verified against when the user does not exist, so an unknown username
/// costs the same time as a wrong password and cannot be told apart. A
/// constant rather than hashed at start-up, which would cost every worker a
/// hash's time on an async thread; a test pins it to [`params`], so
/// changing those fails until this is made anew.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$SmhxqRjSb3X2p/hag6IcpA$enMjqbxwKRZC6Yw1JNZq1fDR/YfgEfBnXQ3QY91u1KM";

/// Work for a hashing thread, given that thread's memory.
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// Memory a hash is computed in, reused by the hashes after it.
#[derive(Default)]
pub(crate) struct Memory {
    blocks: Vec<Block>,
    /// When a hash last finished in it.
    last_used: Option<Instant>,
    /// The threads' counters, told of an allocation as it happens: before
    /// the hash's answer is sent, so a test that has the answer also sees
    /// the count (counting after the job would race the answer's reader).
    #[cfg(any(test, feature = "test-hooks"))]
    counters: Option<Arc<Counters>>,
}

impl Memory {
    /// The first `count` blocks, allocated once (and grown only for a
    /// stored hash that asks for more, within [`MAX_MEMORY_KIB`]).
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::default());
            #[cfg(any(test, feature = "test-hooks"))]
            if let Some(counters) = &self.counters {
                counters.allocations.fetch_add(1, Ordering::Relaxed);
            }
        }
        &mut self.blocks[..count]
    }
}

/// Memory unused this long is given back to the system.
pub(super) const IDLE_RELEASE: Duration = Duration::from_secs(10);

/// The memories no hash is using, the most recently used last: a hash takes
/// that one, so under a trickle of logins one stays in use and the others
/// grow idle. There are never more than the hashing threads.
#[derive(Default)]
struct Spare {
    memories: Mutex<Vec<Memory>>,
}

impl Spare {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Memory>> {
        self.memories.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Memory {
        self.lock().pop().unwrap_or_default()
    }

    fn put(&self, mut memory: Memory) {
        memory.last_used = Some(Instant::now());
        self.lock().push(memory);
    }

    /// Frees the memories unused for `idle`. Each is one block well past
    /// the allocator's threshold for memory of its own, so freeing it gives
    /// it back to the system (`server::return_large_blocks_at_once`).
    fn release_idle(&self, idle: Duration) {
        for memory in self.lock().iter_mut() {
            if memory.last_used.is_some_and(|at| at.elapsed() >= idle) {
                memory.blocks = Vec::new();
            }
        }
    }

    /// How many spare memories hold blocks.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock()
            .iter()
            .filter(|memory| !memory.blocks.is_empty())
            .count()
    }
}

/// Hashes that may wait for a thread, per thread: about what one thread
/// gets through within REQUEST_TIMEOUT_MS's default (5 s at 20 to 40 ms a
/// hash, the second figure under a login flood). Past it a login is
/// refused at once (503) rather than queued to be cut off at its deadline.
/// Logins whose clients left stay queued until a thread skips them, so a
/// bound of only what is in flight would refuse logins after every burst.
pub(super) const QUEUED_PER_THREAD: usize = 128;

/// Where a worker's hashes run.
#[derive(Clone)]
pub struct Passwords {
    backend: Backend,
    /// Verifications so far, real and dummy alike, for tests.
    #[cfg(any(test, feature = "test-hooks"))]
    verifications: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Backend {
    Threads(Threads),
    Process(Arc<Hasher>),
}

impl Passwords {
    /// Hashes on `concurrency` threads of this process; they end when the
    /// last clone of this is dropped.
    pub fn new(concurrency: usize) -> Self {
        Self::on(Backend::Threads(Threads::new(
            concurrency,
            QUEUED_PER_THREAD,
            IDLE_RELEASE,
        )))
    }

    /// Hashes in a helper process started from `program` (this service's
    /// own binary) on `concurrency` threads, started at the first hash and
    /// ended after [`IDLE_RELEASE`] without one.
    pub(crate) fn in_helper_process(program: PathBuf, concurrency: usize) -> Self {
        Self::on(Backend::Process(Arc::new(Hasher::new(
            program,
            concurrency,
            IDLE_RELEASE,
        ))))
    }

    fn on(backend: Backend) -> Self {
        Passwords {
            backend,
            #[cfg(any(test, feature = "test-hooks"))]
            verifications: Arc::default(),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        match &self.backend {
            Backend::Threads(threads) => {
                threads
                    .run(move |memory| hash_with(memory, &password))
                    .await?
            }
            Backend::Process(hasher) => hasher.hash(password).await,
        }
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no stored hash (and then always answers false).
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let matches = match &self.backend {
            Backend::Threads(threads) => {
                threads
                    .run(move |memory| verify_or_dummy(memory, &password, stored.as_deref()))
                    .await??
            }
            Backend::Process(hasher) => hasher.verify(password, stored).await?,
        };
        #[cfg(any(test, feature = "test-hooks"))]
        self.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(matches)
    }

    /// How many verifications have run, real and dummy alike.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The most hashes that have run at once on this process's threads
    /// (never above the concurrency).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn most_concurrent(&self) -> usize {
        self.threads_counter(|counters| counters.most_busy.load(Ordering::Relaxed))
    }

    /// How many times a hashing thread of this process allocated its memory.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn memory_allocations(&self) -> usize {
        self.threads_counter(|counters| counters.allocations.load(Ordering::Relaxed))
    }

    /// A counter of this process's hashing threads; 0 when they are in a
    /// helper process.
    #[cfg(any(test, feature = "test-hooks"))]
    fn threads_counter(&self, read: impl Fn(&Counters) -> usize) -> usize {
        match &self.backend {
            Backend::Threads(threads) => read(&threads.counters),
            Backend::Process(_) => 0,
        }
    }
}

/// A fixed set of hashing threads and the queue in front of them.
#[derive(Clone)]
pub(super) struct Threads {
    jobs: mpsc::SyncSender<Job>,
    #[cfg(test)]
    spare: Arc<Spare>,
    /// What tests watch: hashes running now, the most that ever ran at
    /// once and how often a thread allocated its memory. Not in a release
    /// build.
    #[cfg(any(test, feature = "test-hooks"))]
    counters: Arc<Counters>,
}

#[cfg(any(test, feature = "test-hooks"))]
#[derive(Default)]
struct Counters {
    busy: AtomicUsize,
    most_busy: AtomicUsize,
    allocations: AtomicUsize,
}

impl Threads {
    /// Starts `concurrency` hashing threads, with `queued_per_thread`
    /// hashes a thread waiting at most; each gives its memory back after
    /// `idle` unused. They end when the last clone of this is dropped, once
    /// the queue is done.
    pub(super) fn new(concurrency: usize, queued_per_thread: usize, idle: Duration) -> Self {
        let threads = concurrency.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads * queued_per_thread);
        let queue = Arc::new(Mutex::new(queue));
        let spare = Arc::new(Spare::default());
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            let spare = Arc::clone(&spare);
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || hashing_thread(&queue, &spare, idle));
            if let Err(err) = spawned {
                // Fewer threads, or none: hashing then answers Closed, a 500.
                tracing::error!(error = %err, "could not start a password hashing thread");
            }
        }
        Threads {
            jobs,
            #[cfg(test)]
            spare,
            #[cfg(any(test, feature = "test-hooks"))]
            counters: Arc::default(),
        }
    }

    /// Queues `work` for a hashing thread, or refuses it at once: Busy when
    /// the queue is full, Closed when no thread is left.
    pub(super) fn submit(
        &self,
        work: impl FnOnce(&mut Memory) + Send + 'static,
    ) -> Result<(), HashError> {
        #[cfg(any(test, feature = "test-hooks"))]
        let counters = Arc::clone(&self.counters);
        let job: Job = Box::new(move |memory: &mut Memory| {
            #[cfg(any(test, feature = "test-hooks"))]
            {
                let now = counters.busy.fetch_add(1, Ordering::Relaxed) + 1;
                counters.most_busy.fetch_max(now, Ordering::Relaxed);
                memory.counters = Some(Arc::clone(&counters));
            }
            work(memory);
            #[cfg(any(test, feature = "test-hooks"))]
            counters.busy.fetch_sub(1, Ordering::Relaxed);
        });
        self.jobs.try_send(job).map_err(|err| match err {
            mpsc::TrySendError::Full(_) => HashError::Busy,
            mpsc::TrySendError::Disconnected(_) => HashError::Closed,
        })
    }

    /// Runs `work` on a hashing thread, once one is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, answer) = oneshot::channel();
        self.submit(move |memory| {
            // Its request is gone (cut off at its deadline, or the client
            // left): no one waits for this hash, so it is not computed.
            if done.is_closed() {
                return;
            }
            let _ = done.send(work(memory));
        })?;
        answer.await.map_err(|_| HashError::Lost)
    }
}

/// A hashing thread: takes jobs until every [`Passwords`] is dropped, each
/// in a spare memory. A job that panics loses its answer (the caller gets
/// [`HashError::Lost`]), not the thread. Whichever thread waits on the
/// queue looks for idle memory to give back every `idle / 10`.
fn hashing_thread(queue: &Mutex<mpsc::Receiver<Job>>, spare: &Spare, idle: Duration) {
    yield_to_other_threads();
    loop {
        let job = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(idle / 10);
        match job {
            Ok(job) => {
                let mut memory = spare.take();
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
                spare.put(memory);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => spare.release_idle(idle),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Lowers the calling thread's priority (nice 10), so that a hash gives way
/// whenever an async thread has a request to serve: at the same priority, a
/// login flood's hashes held the cores for whole time slices and a
/// `/v1/hello` beside them waited (p99 several times its unloaded p99,
/// docs/benchmarks.md). With the cores otherwise idle, hashes still get all
/// of them. Lowering one's own priority needs no privilege.
fn yield_to_other_threads() {
    #[cfg(target_os = "linux")]
    {
        let tid = nix::unistd::gettid().as_raw();
        // SAFETY: setpriority takes plain integers; on Linux, PRIO_PROCESS
        // with a thread id changes that one thread.
        let failed = unsafe {
            nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, HASH_NICE)
        } != 0;
        if failed {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the hashing thread's priority");
        }
    }
}

/// The hashing threads' nice value: 0 is the default, 19 the lowest.
#[cfg(target_os = "linux")]
const HASH_NICE: i32 = 10;

/// A new PHC string for `password`, computed in `memory`.
pub(super) fn hash_with(memory: &mut Memory, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let params = params();
    let output = compute(&argon2(), memory, password, salt.as_salt(), OUTPUT_BYTES)?;
    Ok(format!(
        "$argon2id$v={}$m={},t={},p={}${}${}",
        Version::V0x13 as u32,
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        output
    ))
}

/// Checks `password` against the PHC string `stored`, computing in
/// `memory`. The parameters come from `stored`, so hashes made with older
/// settings keep verifying after the constants above change.
fn verify_with(memory: &mut Memory, password: &str, stored: &str) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(stored).map_err(HashError::Stored)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(HashError::Stored)?;
    let version = match parsed.version {
        Some(version) => Version::try_from(version).map_err(HashError::Argon2)?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(HashError::Stored)?;
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_ITERATIONS
        || params.p_cost() > MAX_PARALLELISM
    {
        return Err(HashError::TooCostly(stored_params(&params)));
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(HashError::Stored(
            argon2::password_hash::Error::PhcStringField,
        ));
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let output = compute(&argon2, memory, password, salt, expected.len())?;
    // Output's equality is constant-time.
    Ok(output == expected)
}

/// Checks `password` against `stored`, or against [`DUMMY_HASH`] when the
/// user does not exist, at the same cost: then it never matches.
pub(super) fn verify_or_dummy(
    memory: &mut Memory,
    password: &str,
    stored: Option<&str>,
) -> Result<bool, HashError> {
    let matches = verify_with(memory, password, stored.unwrap_or(DUMMY_HASH))?;
    Ok(matches && stored.is_some())
}

/// Hashes `password` with `salt` into `length` bytes, in `memory`.
fn compute(
    argon2: &Argon2<'_>,
    memory: &mut Memory,
    password: &str,
    salt: Salt<'_>,
    length: usize,
) -> Result<Output, HashError> {
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let raw_salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(HashError::Stored)?;
    let mut out = vec![0u8; length];
    let blocks = memory.blocks(argon2.params().block_count());
    argon2
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, blocks)
        .map_err(HashError::Argon2)?;
    Output::new(&out).map_err(HashError::Stored)
}

/// Hashes on the calling thread; for the CLI. Request handlers use [`Passwords::hash`].
pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    hash_with(&mut Memory::default(), password)
}

/// How long one verification takes on this machine with `threads` of them
/// running at once, each thread in memory it reuses, as the hashing threads
/// work: the median over every thread's `samples` runs. With a thread a
/// core, `threads / time` bounds the logins a second (`make bench` reports
/// it): hashes running side by side share the caches and the memory
/// bandwidth, so each takes longer than one alone would.
pub fn verification_time(samples: usize, threads: usize) -> Result<std::time::Duration, HashError> {
    let stored = hash_blocking("a password of no consequence")?;
    let timed: Vec<Result<Vec<std::time::Duration>, HashError>> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut memory = Memory::default();
                    // Once untimed, as a hashing thread's memory is in use
                    // after its first hash.
                    verify_with(&mut memory, "a password of no consequence", &stored)?;
                    (0..samples.max(1))
                        .map(|_| {
                            let started = std::time::Instant::now();
                            verify_with(&mut memory, "a password of no consequence", &stored)?;
                            Ok(started.elapsed())
                        })
                        .collect()
                })
            })
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().unwrap_or(Err(HashError::Lost)))
            .collect()
    });
    let mut times = Vec::new();
    for thread in timed {
        times.extend(thread?);
    }
    times.sort();
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_threads(concurrency: usize, queued_per_thread: usize, idle: Duration) -> Passwords {
        Passwords::on(Backend::Threads(Threads::new(
            concurrency,
            queued_per_thread,
            idle,
        )))
    }

    fn spare(passwords: &Passwords) -> &Spare {
        match &passwords.backend {
            Backend::Threads(threads) => &threads.spare,
            Backend::Process(_) => unreachable!("these tests hash on threads"),
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(passwords
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!passwords
            .verify("wrong horse".into(), Some(hash))
            .await
            .unwrap());
    }

    /// Checks the right password `count` times, all at once.
    async fn check_at_once(passwords: &Passwords, count: usize) {
        let hash = passwords.hash("pw".into()).await.unwrap();
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (passwords, hash) = (passwords.clone(), hash.clone());
            checks.spawn(async move { passwords.verify("pw".into(), Some(hash)).await });
        }
        while let Some(verdict) = checks.join_next().await {
            assert!(verdict.unwrap().unwrap());
        }
    }

    #[tokio::test]
    async fn no_more_hashes_run_at_once_than_the_concurrency_allows() {
        let passwords = Passwords::new(2);
        check_at_once(&passwords, 6).await;
        assert_eq!(passwords.most_concurrent(), 2);
    }

    /// On a single-threaded runtime, other tasks keep running while a hash is
    /// computed: it happens on a hashing thread, not on the async thread.
    #[tokio::test(flavor = "current_thread")]
    async fn hashing_does_not_block_the_async_thread() {
        let passwords = Passwords::new(1);
        let hashing = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.hash("pw".into()).await }
        });
        let mut ticks = 0;
        while !hashing.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            ticks += 1;
        }
        hashing.await.unwrap().unwrap();
        assert!(ticks > 1, "the runtime made no progress while hashing");
    }

    /// Same algorithm, version, parameters and salt and output lengths as a
    /// hash made now: verifying against it costs what a real check costs.
    #[test]
    fn the_dummy_hash_costs_what_a_real_hash_costs() {
        let real = hash_blocking("any password").unwrap();
        let shape = |hash: &str| {
            let fields: Vec<&str> = hash.split('$').collect();
            let lengths: Vec<usize> = fields[4..].iter().map(|field| field.len()).collect();
            (fields[..4].join("$"), lengths)
        };
        assert_eq!(shape(DUMMY_HASH), shape(&real));
        let mut memory = Memory::default();
        assert!(verify_with(&mut memory, "dummy password for unknown users", DUMMY_HASH).unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_even_with_the_dummy_password() {
        let passwords = Passwords::new(1);
        let verdict = passwords
            .verify("dummy password for unknown users".into(), None)
            .await
            .unwrap();
        assert!(!verdict);
    }

    /// Hashes made here are standard PHC strings: the argon2 crate's own
    /// verifier accepts them, and this one accepts the crate's.
    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let ours = hash_blocking("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2().verify_password(b"wrong horse", &parsed).is_err());

        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2()
            .hash_password(b"battery", &salt)
            .unwrap()
            .to_string();
        let mut memory = Memory::default();
        assert!(verify_with(&mut memory, "battery", &theirs).unwrap());
        assert!(!verify_with(&mut memory, "staple", &theirs).unwrap());
    }

    /// Each hashing thread allocates argon2's memory once and reuses it:
    /// however many checks run, hashing memory is the thread count times
    /// one hash's.
    #[tokio::test]
    async fn each_hashing_thread_allocates_its_memory_once() {
        let passwords = Passwords::new(2);
        check_at_once(&passwords, 12).await;
        assert!(
            passwords.memory_allocations() <= 2,
            "{}",
            passwords.memory_allocations()
        );
    }

    /// The hashing threads run at a lower priority than the async threads,
    /// which a login flood must not starve.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_give_way_to_the_others() {
        let passwords = Passwords::new(2);
        check_at_once(&passwords, 2).await;
        let nice_of = |task: &std::path::Path| -> Option<(String, i32)> {
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // Fields after the parenthesised name; nice is the 19th field.
            let after_name = &stat[stat.rfind(')')? + 2..];
            let nice = after_name.split(' ').nth(16)?.parse().ok()?;
            Some((name.trim().to_owned(), nice))
        };
        let threads: Vec<(String, i32)> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| nice_of(&task.ok()?.path()))
            .collect();
        let hashing: Vec<i32> = threads
            .iter()
            .filter(|(name, _)| name.starts_with("password-hash"))
            .map(|(_, nice)| *nice)
            .collect();
        assert!(hashing.len() >= 2, "{threads:?}");
        assert!(hashing.iter().all(|nice| *nice == HASH_NICE), "{threads:?}");
        let own = nice_of(std::path::Path::new("/proc/thread-self"))
            .unwrap()
            .1;
        assert_eq!(own, 0, "the test's own thread keeps its priority");
    }

    /// Polls `holds` until it is true, failing with `what` past `within`.
    async fn wait_until(what: &str, within: Duration, holds: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !holds() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn memory_unused_for_a_while_is_given_back_and_made_again_when_needed() {
        let idle = Duration::from_secs(1);
        let passwords = on_threads(2, QUEUED_PER_THREAD, idle);
        check_at_once(&passwords, 4).await;
        let allocated = passwords.memory_allocations();
        assert!(allocated >= 1);
        // A thread puts its memory back just after sending its answer, so
        // having every answer does not yet mean every memory is back.
        wait_until("the memory is kept between hashes", idle * 5, || {
            spare(&passwords).held() == allocated
        })
        .await;
        wait_until("idle memory was not given back", idle * 10, || {
            spare(&passwords).held() == 0
        })
        .await;
        check_at_once(&passwords, 1).await;
        assert!(passwords.memory_allocations() > allocated, "made again");
    }

    /// A stored hash cannot make a thread hold more memory, or work longer,
    /// than four times the current parameters.
    #[test]
    fn a_stored_hash_asking_for_too_much_memory_or_time_is_refused_unrun() {
        let costly = [
            format!("m={},t=2,p=1", MAX_MEMORY_KIB + 1),
            format!("m=19456,t={},p=1", MAX_ITERATIONS + 1),
            format!("m=19456,t=2,p={}", MAX_PARALLELISM + 1),
        ];
        for params in costly {
            let stored = DUMMY_HASH.replace("m=19456,t=2,p=1", &params);
            let mut memory = Memory::default();
            let refused = verify_with(&mut memory, "anything", &stored);
            assert!(
                matches!(refused, Err(HashError::TooCostly(_))),
                "{params}: {refused:?}"
            );
            assert!(memory.blocks.is_empty(), "{params}: memory allocated");
        }
    }

    /// Past the queue, a check is refused at once (a 503) instead of
    /// waiting to be cut off at its request's deadline.
    #[tokio::test]
    async fn checks_past_the_queue_are_refused_at_once() {
        let passwords = on_threads(1, 2, IDLE_RELEASE);
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let passwords = passwords.clone();
            checks.spawn(async move { passwords.verify("pw".into(), None).await });
        }
        let mut busy = 0;
        while let Some(verdict) = checks.join_next().await {
            match verdict.unwrap() {
                Ok(verified) => assert!(!verified),
                Err(HashError::Busy) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        // One running, two waiting: at least the rest were refused.
        assert!(busy >= 12 - 3, "only {busy} refused");
    }
}
