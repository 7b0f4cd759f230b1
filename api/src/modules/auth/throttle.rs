//! The failed-login throttle: per account, whatever address the attempts
//! come from, counted in the core's shared [`Counters`].

use std::future::Future;
use std::time::Duration;

use super::passwords::HashError;
use crate::ratelimit::{Counters, Standing};
use crate::storage::StorageError;

/// Why a password check gave no user.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Identical for unknown users and wrong passwords.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The account had too many failures in the window: refused unchecked.
    #[error("too many failed attempts for this account; try again later")]
    Throttled(Standing),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

#[derive(Clone)]
pub struct LoginThrottle {
    counters: Counters,
    prefix: String,
    /// Failed logins per account within `window`.
    failures: u64,
    window: Duration,
}

impl LoginThrottle {
    pub fn new(counters: Counters, failures: u64, window: Duration) -> Self {
        LoginThrottle {
            prefix: counters.key_prefix("rate:login:"),
            counters,
            failures,
            window,
        }
    }

    /// Runs `check` (a password check that yields `Some` on success) under
    /// `username`'s throttle. While the account is throttled it is refused
    /// unchecked, so guessing from many addresses gains nothing; a failure
    /// is counted, and a success clears the count.
    pub async fn password_check<T>(
        &self,
        username: &str,
        check: impl Future<Output = Result<Option<T>, LoginError>>,
    ) -> Result<T, LoginError> {
        let key = [self.prefix.as_str(), &username.to_lowercase()].concat();
        let standing = self
            .counters
            .count(&key, self.failures, self.window, 0)
            .await?;
        if standing.spent() {
            tracing::warn!(
                failures = standing.used,
                "password check refused: account throttled"
            );
            return Err(LoginError::Throttled(standing));
        }
        match check.await? {
            Some(passed) => {
                self.counters.clear(&key).await?;
                Ok(passed)
            }
            None => {
                self.counters
                    .count(&key, self.failures, self.window, 1)
                    .await?;
                Err(LoginError::InvalidCredentials)
            }
        }
    }
}
