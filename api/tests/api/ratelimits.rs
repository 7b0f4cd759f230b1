//! Rate limits live in Redis, so they hold across workers and replicas: a
//! request budget per client address, and a failed-login throttle per
//! account from any address.

use std::net::IpAddr;

use app::ratelimit::{Limits, RateLimiter};
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, free_ports, spawn_app_with, Servers, PASSWORD};
use crate::serving::Served;

fn header(response: &Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// 429 as a problem document, telling the client when to come back.
async fn assert_limited(response: Response) {
    let retry_after = header(&response, "retry-after");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After: {retry_after:?}"
    );
    assert_eq!(header(&response, "ratelimit-remaining"), Some(0));
    assert!(header(&response, "ratelimit-limit").is_some());
    assert!(header(&response, "ratelimit-reset").is_some());
    assert_problem(response, 429).await;
}

#[tokio::test]
async fn each_address_has_a_request_budget_and_probes_are_not_counted() {
    let app = spawn_app_with(&Servers::shared(), &["--rate-limit-per-minute=5"]).await;
    let from = |address: &'static str| {
        app.client
            .get(app.url("/v1/hello"))
            .header("x-real-ip", address)
            .send()
    };

    for left in (0..5).rev() {
        let response = from("198.51.100.1").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "ratelimit-limit"), Some(5));
        assert_eq!(header(&response, "ratelimit-remaining"), Some(left));
    }
    assert_limited(from("198.51.100.1").await.unwrap()).await;

    // Another address has its own budget; probes never count.
    assert_eq!(from("198.51.100.2").await.unwrap().status(), StatusCode::OK);
    let probe = app
        .client
        .get(app.url("/healthz"))
        .header("x-real-ip", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
}

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

#[tokio::test]
async fn budgets_reserved_in_chunks_never_let_an_address_past_its_limit() {
    // Two workers' limiters on one Redis, with a budget big enough to be
    // reserved in chunks (a twentieth: 10 at a time).
    let app = spawn_app_with(&Servers::shared(), &["--rate-limit-per-minute=200"]).await;
    let redis = redis::aio::ConnectionManager::new(app.redis.clone())
        .await
        .unwrap();
    let limits = Limits {
        per_minute: 200,
        login_failures: 5,
        login_window: std::time::Duration::from_secs(60),
    };
    let workers = [
        RateLimiter::new(redis.clone(), &app.settings.redis, limits),
        RateLimiter::new(redis, &app.settings.redis, limits),
    ];
    let ip: IpAddr = "203.0.113.7".parse().unwrap();

    let mut allowed = 0;
    let mut last_used = 0;
    for turn in 0..400 {
        let standing = workers[turn % 2].request(ip).await.unwrap();
        if standing.over() {
            assert_eq!(standing.remaining(), 0);
            continue;
        }
        allowed += 1;
        assert!(standing.used <= 200, "{standing:?}");
        assert!(standing.used > 0);
        last_used = last_used.max(standing.used);
    }
    // Never past the limit; early by at most the credit one worker held.
    assert!(allowed <= 200, "{allowed} allowed");
    assert!(allowed >= 190, "only {allowed} allowed");
    assert!(last_used <= 200);

    // A small budget stays exact: counted one request at a time.
    let small = Limits {
        per_minute: 5,
        ..limits
    };
    let redis = redis::aio::ConnectionManager::new(app.redis.clone())
        .await
        .unwrap();
    let limiter = RateLimiter::new(redis, &app.settings.redis, small);
    let other: IpAddr = "203.0.113.8".parse().unwrap();
    for used in 1..=5 {
        assert_eq!(limiter.request(other).await.unwrap().used, used);
    }
    assert!(limiter.request(other).await.unwrap().over());
}
