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

/// Whose failures an attempt counts against.
#[derive(Debug, Clone, Copy)]
pub enum Account<'a> {
    /// A user that exists: counted by id, so every spelling that reaches
    /// the account shares one count.
    User(i64),
    /// A username no user has: counted by the name as typed (ASCII case
    /// aside), so unknown names are throttled as known ones are and cannot
    /// be told apart by it.
    Unknown(&'a str),
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

    fn key(&self, account: Account<'_>) -> String {
        match account {
            Account::User(id) => format!("{}user:{id}", self.prefix),
            Account::Unknown(name) => {
                [self.prefix.as_str(), "name:", &name.to_ascii_lowercase()].concat()
            }
        }
    }

    /// Runs `check` (a password check that yields `Some` on success) under
    /// `account`'s throttle. Each attempt reserves its place in the count
    /// before the check, in one atomic step, so however many arrive at once
    /// no more than LOGIN_MAX_FAILURES are checked per window; past that
    /// they are refused unchecked, from whatever address. A success clears
    /// the count (attempts reserved meanwhile included: the password was
    /// known). An attempt whose check fails with an error rather than a
    /// verdict (storage, the hashing queue full) still counts: this fails
    /// closed.
    pub async fn password_check<T>(
        &self,
        account: Account<'_>,
        check: impl Future<Output = Result<Option<T>, LoginError>>,
    ) -> Result<T, LoginError> {
        let key = self.key(account);
        let standing = self
            .counters
            .count(&key, self.failures, self.window, 1)
            .await?;
        if standing.over() {
            tracing::warn!(
                attempts = standing.used,
                "password check refused: account throttled"
            );
            return Err(LoginError::Throttled(standing));
        }
        match check.await? {
            Some(passed) => {
                self.counters.clear(&key).await?;
                Ok(passed)
            }
            None => Err(LoginError::InvalidCredentials),
        }
    }
}
