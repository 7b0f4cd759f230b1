//! A served worker checks passwords in a hasher process of its own
//! (`app::modules::auth::hasher`): in a session, and so a scheduling group,
//! of its own at a tenth of the weight (nice 10); started at the first
//! login, replaced when it dies, ended when idle.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::json;

use crate::auth::helpers::{ServedSignIn, PASSWORD};
use crate::helpers::eventually;
use crate::serving::{children_of, Served};

const PATIENCE: Duration = Duration::from_secs(15);

/// The session a process belongs to (the fourth field after its name in
/// /proc/PID/stat).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// The worker's live children: its hasher, if one runs.
fn hashers_of(worker: i32) -> Vec<i32> {
    children_of(worker)
        .into_iter()
        .filter(|child| !child.zombie)
        .map(|child| child.pid)
        .collect()
}

async fn login(served: &Served, password: &str) -> StatusCode {
    served
        .client
        .post(format!("{}/login", served.base))
        .json(&json!({ "username": "hashed", "password": password }))
        .send()
        .await
        .unwrap()
        .status()
}

/// One served worker, and the user `hashed`.
async fn served_with_a_user() -> (Served, i32) {
    let served = Served::start(1, &[]).await;
    served.create_user("hashed").await;
    let worker = served.workers()[0];
    (served, worker)
}

#[tokio::test]
async fn passwords_are_checked_in_a_hasher_of_the_workers_in_a_session_of_its_own() {
    let (served, worker) = served_with_a_user().await;
    assert_eq!(hashers_of(worker), Vec::<i32>::new(), "none before a login");

    let status = login(&served, PASSWORD).await;
    if status != StatusCode::OK {
        tokio::time::sleep(Duration::from_secs(1)).await;
        panic!("{status}: {}", served.log());
    }
    assert_eq!(
        login(&served, "not the password").await,
        StatusCode::UNAUTHORIZED
    );

    let hashers = hashers_of(worker);
    assert_eq!(hashers.len(), 1, "{hashers:?}\n{}", served.log());
    let hasher = hashers[0];
    // Named for `ps` after the service (at most 15 bytes, the kernel's limit).
    let name = std::fs::read_to_string(format!("/proc/{hasher}/comm")).unwrap();
    let expected = format!("{}-hasher", env!("CARGO_PKG_NAME"));
    assert!(expected.starts_with(name.trim_end()), "{name:?}");
    assert_eq!(
        session_of(hasher),
        Some(hasher),
        "it leads a session of its own"
    );
    assert_ne!(session_of(worker), Some(hasher));
    // Where the kernel groups by session, the group is weighed at nice 10
    // (the write comes from a thread of the hasher's, a moment later).
    let autogroup = format!("/proc/{hasher}/autogroup");
    if std::fs::metadata(&autogroup).is_ok() {
        let weighed = eventually(PATIENCE, || async {
            std::fs::read_to_string(&autogroup)
                .is_ok_and(|group| group.trim_end().ends_with("nice 10"))
        })
        .await;
        assert!(weighed, "{:?}", std::fs::read_to_string(&autogroup));
    }
}

/// A hasher that dies costs no login: the next one is checked by a new
/// hasher, whether or not the worker has noticed the death by then.
#[tokio::test]
async fn a_hasher_that_dies_is_replaced_at_the_next_login() {
    let (served, worker) = served_with_a_user().await;
    assert_eq!(login(&served, PASSWORD).await, StatusCode::OK);
    let first = hashers_of(worker)[0];

    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    // Exited (a zombie counts): its pipes are closed.
    let exited = eventually(PATIENCE, || async { hashers_of(worker).is_empty() }).await;
    assert!(exited, "the killed hasher still runs");

    let status = login(&served, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        served.log_with("status=").await
    );
    assert_eq!(
        login(&served, "not the password").await,
        StatusCode::UNAUTHORIZED
    );
    let replaced = hashers_of(worker);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_ne!(replaced[0], first);
    served.log_with("the password hasher ended unasked").await;
}

/// Idle, the hasher ends (with the memory it hashed in); the next login
/// starts another.
#[tokio::test]
async fn an_idle_hasher_ends_and_the_next_login_starts_another() {
    let (served, worker) = served_with_a_user().await;
    assert_eq!(login(&served, PASSWORD).await, StatusCode::OK);
    let first = hashers_of(worker)[0];

    // The hasher's idle time is 10 s (IDLE_RELEASE in passwords.rs).
    let ended = eventually(Duration::from_secs(30), || async {
        hashers_of(worker).is_empty()
    })
    .await;
    assert!(
        ended,
        "the idle hasher still runs: {:?}",
        hashers_of(worker)
    );

    let next_login = served
        .client
        .post(format!("{}/login", served.base))
        .header("x-request-id", "after-the-idle-end")
        .json(&json!({ "username": "hashed", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(next_login.status(), StatusCode::OK);
    let next = hashers_of(worker);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], first);
    // An end it was asked for is no warning.
    let log = served.log_with("after-the-idle-end").await;
    assert!(!log.contains("ended unasked"), "{log}");
}

/// A worker that is killed takes its hasher with it.
#[tokio::test]
async fn a_killed_worker_leaves_no_hasher_behind() {
    let (served, worker) = served_with_a_user().await;
    assert_eq!(login(&served, PASSWORD).await, StatusCode::OK);
    let hasher = hashers_of(worker)[0];

    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    let gone = eventually(PATIENCE, || async {
        std::fs::metadata(format!("/proc/{hasher}")).is_err()
    })
    .await;
    assert!(gone, "hasher {hasher} outlived its worker");
}
