//! Rate limits live in Redis, so they hold across workers and replicas: a
//! request budget per client address.

use std::net::IpAddr;

use app::ratelimit::{self, RateLimiter};
use app::storage::redis::Redis;
use reqwest::{Response, StatusCode};

use crate::helpers::{assert_problem, spawn_app_with, Servers};

fn header(response: &Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// 429 as a problem document, telling the client when to come back.
pub async fn assert_limited(response: Response) {
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
async fn budgets_reserved_in_chunks_never_let_an_address_past_its_limit() {
    // Two workers' limiters on one Redis, with a budget big enough to be
    // reserved in chunks (a twentieth: 10 at a time).
    let app = spawn_app_with(&Servers::shared(), &["--rate-limit-per-minute=200"]).await;
    let redis = Redis::new(&app.settings.redis).unwrap();
    let workers = [
        RateLimiter::new(redis.clone(), 200),
        RateLimiter::new(redis, 200),
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
    let redis = Redis::new(&app.settings.redis).unwrap();
    let limiter = RateLimiter::new(redis, 5);
    let other: IpAddr = "203.0.113.8".parse().unwrap();
    for used in 1..=5 {
        assert_eq!(limiter.request(other).await.unwrap().used, used);
    }
    assert!(limiter.request(other).await.unwrap().over());
}

/// A flood of distinct addresses (one request each, more of them than a
/// process holds credit for) leaves the limiter's memory within its bound,
/// and an address that comes after it is limited as exactly as ever.
#[tokio::test]
async fn a_flood_of_distinct_addresses_stays_within_the_bound_and_limits_hold() {
    let app = spawn_app_with(&Servers::shared(), &[]).await;
    let redis = Redis::new(&app.settings.redis).unwrap();
    let limiter = RateLimiter::new(redis, 200);
    let flood = (ratelimit::CREDITS_KEPT + 2_000) as u32;
    let mut requests = tokio::task::JoinSet::new();
    for batch in (0..flood).collect::<Vec<_>>().chunks(500) {
        for &n in batch {
            let limiter = limiter.clone();
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            requests.spawn(async move { limiter.request(ip).await.unwrap() });
        }
        while let Some(standing) = requests.join_next().await {
            assert_eq!(standing.unwrap().used, 1, "a fresh address");
        }
        assert!(limiter.addresses_held() <= ratelimit::CREDITS_KEPT);
    }
    assert!(limiter.addresses_held() <= ratelimit::CREDITS_KEPT);

    let late: IpAddr = "203.0.113.9".parse().unwrap();
    let mut allowed = 0;
    for _ in 0..210 {
        if !limiter.request(late).await.unwrap().over() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 200);
}

/// An IPv6 client is usually given a /64: its budget is the block's, so
/// rotating through the block's addresses gains nothing.
#[tokio::test]
async fn ipv6_clients_share_the_budget_of_their_64() {
    let app = spawn_app_with(&Servers::shared(), &["--rate-limit-per-minute=3"]).await;
    let from = |address: &str| {
        app.client
            .get(app.url("/v1/hello"))
            .header("x-real-ip", address)
            .send()
    };
    for n in 1..=3 {
        let response = from(&format!("2001:db8:1:2::{n}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_limited(from("2001:db8:1:2:ffff:ffff:ffff:ffff").await.unwrap()).await;
    let neighbour = from("2001:db8:1:3::1").await.unwrap();
    assert_eq!(neighbour.status(), StatusCode::OK);
}
