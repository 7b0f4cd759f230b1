//! The failed-login throttle: per account, from any address, across
//! workers, kept in Redis beside the core's request budgets.

use reqwest::StatusCode;
use serde_json::json;

use crate::auth::helpers::{ServedSignIn, PASSWORD};
use crate::helpers::free_ports;
use crate::ratelimits::assert_limited;
use crate::serving::Served;

#[tokio::test]
async fn failed_logins_throttle_the_account_across_workers_and_addresses() {
    let first = free_ports(2);
    let served = Served::start(
        2,
        &[
            ("FIRST_WORKER_PORT", &first.to_string()),
            ("LOGIN_MAX_FAILURES", "3"),
        ],
    )
    .await;
    served.create_user("victim").await;
    served.create_user("bystander").await;
    let login = |port: u16, address: String, username: &'static str, password: &'static str| {
        served
            .client
            .post(format!("http://127.0.0.1:{port}/login"))
            .header("x-real-ip", address)
            .json(&json!({ "username": username, "password": password }))
            .send()
    };
    // Each worker answers on its own port: the attempts alternate between
    // them, each from a different address.
    let workers = [
        served.worker_at(first).await,
        served.worker_at(first + 1).await,
    ];
    assert_ne!(workers[0], workers[1]);

    for attempt in 0..3u16 {
        let port = first + attempt % 2;
        let address = format!("203.0.113.{attempt}");
        let failed = login(port, address, "victim", "wrong guess").await.unwrap();
        assert_eq!(
            failed.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            served.log()
        );
    }

    // Now even the right password, from a fresh address, is refused...
    let refused = login(first + 1, "192.0.2.77".into(), "victim", PASSWORD)
        .await
        .unwrap();
    assert_limited(refused).await;
    // ...while other accounts log in as usual.
    let other = login(first, "203.0.113.0".into(), "bystander", PASSWORD)
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}
