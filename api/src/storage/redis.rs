//! Redis: one multiplexed connection a process, shared by everything that
//! keeps state there, with every call bounded in time, a breaker that stops
//! asking for a while once Redis failed, and every key under the service's
//! prefix.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tracing::Instrument;

use super::tls::{self, TlsSetupError};
use super::{Dependency, StorageError};
use crate::telemetry;

/// Redis, which holds the rate limits and the modules' shared state.
#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0, or rediss://host:6380/0 for
    /// TLS (the certificate checked against REDIS_CA_FILE or the system's
    /// roots, and the host name against it).
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "REDIS_URL"
    )]
    pub url: String,
    /// PEM file of the CA(s) that sign the Redis server's certificate, for a
    /// rediss:// URL; in place of the system's roots. Not secret.
    #[arg(
        id = "redis_ca_file",
        long = "redis-ca-file",
        env = "REDIS_CA_FILE",
        value_name = "REDIS_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Connect and response timeout; past it a request answers 503.
    #[arg(
        id = "redis_timeout_ms",
        long = "redis-timeout-ms",
        env = "REDIS_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub timeout_ms: u64,
    /// Prefix of every key this service writes, so services can share a
    /// Redis. Defaults to the service's name and a colon.
    #[arg(
        long = "redis-key-prefix",
        env = "REDIS_KEY_PREFIX",
        default_value = concat!(env!("CARGO_PKG_NAME"), ":")
    )]
    pub key_prefix: String,
}

impl RedisSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("REDIS_URL is not a Redis URL")]
    Url(#[source] redis::RedisError),
    /// redis-rs' `#insecure` fragment turns off every certificate check;
    /// this build leaves that code out (no `tls-rustls-insecure`) and says
    /// so at start-up rather than at the first connection.
    #[error("REDIS_URL ends in #insecure, which would accept any certificate; name the server's CA with REDIS_CA_FILE instead")]
    Insecure,
    #[error("REDIS_CA_FILE is set but REDIS_URL is not a rediss:// URL: the CA would not be used")]
    CaWithoutTls,
    #[error(transparent)]
    CaFile(#[from] TlsSetupError),
}

/// The client for `settings`: its URL, over TLS for `rediss://`, with
/// REDIS_CA_FILE's roots when it is set. Reads the CA file, so a wrong path
/// is found at start-up.
pub fn client(settings: &RedisSettings) -> Result<redis::Client, RedisSetupError> {
    use redis::IntoConnectionInfo;

    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(RedisSetupError::Url)?;
    let tls = match info.addr() {
        redis::ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(RedisSetupError::Insecure)
        }
        redis::ConnectionAddr::TcpTls { .. } => true,
        _ => false,
    };
    tls::install_default_provider();
    let Some(path) = &settings.ca_file else {
        return redis::Client::open(info).map_err(RedisSetupError::Url);
    };
    if !tls {
        return Err(RedisSetupError::CaWithoutTls);
    }
    // Checked here for the error's sake (which setting, which file); redis-rs
    // parses the PEM again, and uses these roots instead of the system's.
    let (root_cert, _) = tls::read_roots("REDIS_CA_FILE", path)?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(info, certificates).map_err(RedisSetupError::Url)
}

/// The process's Redis: cheap to clone, every clone the same connection
/// and the same breaker.
#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    breaker: Arc<Mutex<Breaker>>,
}

/// Whether to ask Redis at all. A Redis that failed (did not answer in
/// time, or refused the connection) is not asked again for a timeout's
/// length: calls fail at once, so that a stalled Redis costs a request
/// nothing rather than a timeout per call (the request budget alone makes
/// one on every request). Then one call probes; the others keep failing at
/// once until it answers.
#[derive(Debug, Clone, Copy)]
enum Breaker {
    Closed,
    Open { until: Instant },
    Probing { since: Instant },
}

/// Why a call was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admitted {
    /// The breaker is closed.
    Call,
    /// The one call that finds out whether Redis is back: only its answer
    /// closes the breaker (a call let through before it opened, answering
    /// late, says nothing about now).
    Probe,
}

impl Breaker {
    /// May a call go to Redis now? Takes the probe when the breaker's time
    /// is up (or a probe was abandoned, its request cancelled).
    fn admit(&mut self, now: Instant, timeout: Duration) -> Option<Admitted> {
        match *self {
            Breaker::Closed => Some(Admitted::Call),
            Breaker::Open { until } if now < until => None,
            Breaker::Probing { since } if now - since < timeout * 2 => None,
            Breaker::Open { .. } | Breaker::Probing { .. } => {
                *self = Breaker::Probing { since: now };
                Some(Admitted::Probe)
            }
        }
    }

    /// Takes a call's outcome: any outage opens the breaker for `pause`;
    /// the probe's answer closes it.
    fn record(&mut self, admitted: Admitted, outage: bool, now: Instant, pause: Duration) {
        if outage {
            if matches!(self, Breaker::Closed) {
                tracing::warn!(?pause, "Redis failed; not asking it again for a while");
            }
            *self = Breaker::Open { until: now + pause };
        } else if admitted == Admitted::Probe {
            tracing::info!("Redis answers again");
            *self = Breaker::Closed;
        }
    }
}

impl Redis {
    /// Connects lazily: the service starts, and reports not-ready, while Redis
    /// is down, and the manager reconnects by itself when Redis returns.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisSetupError> {
        let client = client(settings)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout()))
            .set_response_timeout(Some(settings.timeout()))
            // Reconnect attempts are cheap; a long backoff would stretch an
            // outage past the moment Redis is back.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(Redis {
            connection: ConnectionManager::new_lazy_with_config(client, config)
                .map_err(RedisSetupError::Url)?,
            prefix: settings.key_prefix.as_str().into(),
            timeout: settings.timeout(),
            breaker: Arc::new(Mutex::new(Breaker::Closed)),
        })
    }

    /// A key prefix under the service's own: `key_prefix("rate:")`.
    pub fn key_prefix(&self, name: &str) -> String {
        [&self.prefix, name].concat()
    }

    /// A handle to send commands on; wrap each call in [`Redis::bounded`].
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Caps a Redis call, including the reconnects the manager does
    /// underneath it, so an outage is a prompt 503, never a hang; while the
    /// breaker is open, fails at once without asking.
    /// `operation` names the command (`GET`, `EVALSHA`) in its trace span.
    pub async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StorageError> {
        self.bounded_untraced(call)
            .instrument(telemetry::dependency_span("redis", operation, None))
            .await
    }

    async fn bounded_untraced<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StorageError> {
        let breaker = || self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(admitted) = breaker().admit(Instant::now(), self.timeout) else {
            return Err(StorageError::unavailable(Dependency::Redis, BreakerOpen));
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(StorageError::from),
            Err(elapsed) => {
                tracing::warn!(timeout = ?self.timeout, "Redis did not answer in time");
                Err(StorageError::unavailable(Dependency::Redis, elapsed))
            }
        };
        let outage = matches!(result, Err(StorageError::Unavailable { .. }));
        breaker().record(admitted, outage, Instant::now(), self.timeout);
        result
    }

    /// Answers whether Redis serves commands right now.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut connection = self.connection();
        let _: String = self.bounded("PING", connection.ping()).await?;
        Ok(())
    }
}

/// Why a call was not sent: Redis failed a moment ago (see [`Breaker`]).
#[derive(Debug, thiserror::Error)]
#[error("Redis failed a moment ago; not asked")]
struct BreakerOpen;

/// A Redis failure is an outage when the connection is at fault, else a bug.
impl From<redis::RedisError> for StorageError {
    fn from(err: redis::RedisError) -> Self {
        // A Redis loading its data, read-only or without its master answers,
        // but cannot serve: an outage too.
        let busy = matches!(
            err.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::ClusterDown
            )
        );
        if busy
            || err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
        {
            tracing::warn!(error = %err, "Redis failed");
            StorageError::unavailable(Dependency::Redis, err)
        } else {
            StorageError::Failed(err.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_stops_asking_for_a_timeout_then_lets_one_probe_through() {
        let timeout = Duration::from_millis(100);
        let start = Instant::now();
        let mut breaker = Breaker::Closed;
        assert_eq!(breaker.admit(start, timeout), Some(Admitted::Call));
        breaker.record(Admitted::Call, true, start, timeout);
        assert_eq!(breaker.admit(start + timeout / 2, timeout), None);
        // A call let through before the failure, answering late, does not
        // close it.
        breaker.record(Admitted::Call, false, start + timeout / 2, timeout);
        assert_eq!(breaker.admit(start + timeout / 2, timeout), None);
        // Time is up: one probe goes, the others wait for its answer.
        assert_eq!(
            breaker.admit(start + timeout, timeout),
            Some(Admitted::Probe)
        );
        assert_eq!(breaker.admit(start + timeout, timeout), None);
        // A probe never answered (its request cancelled): another goes.
        assert_eq!(
            breaker.admit(start + timeout * 3, timeout),
            Some(Admitted::Probe)
        );
        // Its answer closes the breaker.
        breaker.record(Admitted::Probe, false, start + timeout * 3, timeout);
        assert_eq!(
            breaker.admit(start + timeout * 3, timeout),
            Some(Admitted::Call)
        );
    }

    /// The breaker as calls meet it: a call that does not answer in time
    /// opens it, the next fails at once without being run, and after the
    /// pause a probe that answers closes it.
    #[tokio::test]
    async fn bounded_calls_drive_the_breaker() {
        let settings = RedisSettings {
            // Never dialled: the calls below are futures of the test's own.
            url: "redis://127.0.0.1:9/0".into(),
            ca_file: None,
            timeout_ms: 50,
            key_prefix: "test:".into(),
        };
        let redis = Redis::new(&settings).unwrap();
        let stalled = redis.bounded("GET", std::future::pending::<redis::RedisResult<()>>());
        assert!(matches!(
            stalled.await,
            Err(StorageError::Unavailable { .. })
        ));

        let ran = std::sync::atomic::AtomicBool::new(false);
        let skipped = redis.bounded("GET", async {
            ran.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        assert!(matches!(
            skipped.await,
            Err(StorageError::Unavailable { .. })
        ));
        assert!(
            !ran.load(std::sync::atomic::Ordering::Relaxed),
            "asked while open"
        );

        tokio::time::sleep(Duration::from_millis(60)).await;
        redis.bounded("GET", async { Ok(()) }).await.unwrap();
        redis.bounded("GET", async { Ok(()) }).await.unwrap();
    }
}
