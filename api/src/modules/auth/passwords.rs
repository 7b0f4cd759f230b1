//! Password hashing with argon2id, off the async threads and bounded in
//! concurrency, so a login flood queues instead of starving every request.

#[cfg(any(test, feature = "test-hooks"))]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{AcquireError, Semaphore};
use tokio::task::JoinError;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the hashing pool is closed")]
    Closed(#[source] AcquireError),
    #[error("the hashing task failed")]
    Task(#[source] JoinError),
    #[error("argon2 failed")]
    Argon2(#[source] argon2::password_hash::Error),
}

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

fn argon2() -> Argon2<'static> {
    // The constants above are within argon2's bounds, so this cannot fail.
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// What tests watch: verifications so far, hashes running now and the
    /// most that ever ran at once. Not in a release build.
    #[cfg(any(test, feature = "test-hooks"))]
    counters: Arc<Counters>,
}

#[cfg(any(test, feature = "test-hooks"))]
#[derive(Default)]
struct Counters {
    verifications: AtomicU64,
    busy: AtomicUsize,
    most_busy: AtomicUsize,
}

/// Verified against when the user does not exist, so an unknown username
/// costs the same time as a wrong password and cannot be told apart. A
/// constant rather than hashed at start-up, which would cost every worker a
/// hash's time on an async thread; a test pins it to [`argon2`]'s
/// parameters, so changing those fails until this is made anew.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$SmhxqRjSb3X2p/hag6IcpA$enMjqbxwKRZC6Yw1JNZq1fDR/YfgEfBnXQ3QY91u1KM";

impl Passwords {
    pub fn new(concurrency: usize) -> Self {
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            #[cfg(any(test, feature = "test-hooks"))]
            counters: Arc::default(),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no stored hash (and then always answers false).
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let user_exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let matches = self
            .run(move || verify_blocking(&password, &hash))
            .await??;
        #[cfg(any(test, feature = "test-hooks"))]
        self.counters.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(matches && user_exists)
    }

    /// The most hashes that have run at once (never above the concurrency).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn most_concurrent(&self) -> usize {
        self.counters.most_busy.load(Ordering::Relaxed)
    }

    /// How many verifications have run, real and dummy alike.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn verifications(&self) -> u64 {
        self.counters.verifications.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(HashError::Closed)?;
        #[cfg(any(test, feature = "test-hooks"))]
        {
            let now = self.counters.busy.fetch_add(1, Ordering::Relaxed) + 1;
            self.counters.most_busy.fetch_max(now, Ordering::Relaxed);
        }
        let done = tokio::task::spawn_blocking(work).await;
        #[cfg(any(test, feature = "test-hooks"))]
        self.counters.busy.fetch_sub(1, Ordering::Relaxed);
        done.map_err(HashError::Task)
    }
}

/// Hashes on the calling thread; for the CLI. Request handlers use [`Passwords::hash`].
pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(HashError::Argon2)
}

/// How long one verification takes on this machine, on one core: the median
/// of `samples` runs. It bounds login throughput (`make bench` reports it).
pub fn verification_time(samples: usize) -> Result<std::time::Duration, HashError> {
    let stored = hash_blocking("a password of no consequence")?;
    let mut times = Vec::with_capacity(samples.max(1));
    for _ in 0..samples.max(1) {
        let started = std::time::Instant::now();
        verify_blocking("a password of no consequence", &stored)?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn verify_blocking(password: &str, stored: &str) -> Result<bool, HashError> {
    // The parameters come from the stored PHC string, so hashes made with
    // older settings keep verifying after the constants above change.
    let parsed = PasswordHash::new(stored).map_err(HashError::Argon2)?;
    Ok(argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn no_more_hashes_run_at_once_than_the_concurrency_allows() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("pw".into()).await.unwrap();
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (passwords, hash) = (passwords.clone(), hash.clone());
            checks.spawn(async move { passwords.verify("pw".into(), Some(hash)).await });
        }
        while let Some(verdict) = checks.join_next().await {
            assert!(verdict.unwrap().unwrap());
        }
        assert_eq!(passwords.most_concurrent(), 2);
    }

    /// On a single-threaded runtime, other tasks keep running while a hash is
    /// computed: it happens on the blocking pool, not on the async thread.
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
        assert!(verify_blocking("dummy password for unknown users", DUMMY_HASH).unwrap());
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
}
