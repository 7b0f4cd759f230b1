//! Sign-in's requests in a caller's trace, through the shipped nginx.conf
//! to a real OTLP receiver: one trace, requests under the caller's span,
//! PostgreSQL and Redis calls under their request, no secret anywhere; and
//! the event a change writes carries that trace onto the stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use crate::auth::helpers::{ServedSignIn, PASSWORD};
use crate::helpers::{eventually, Servers};
use crate::proxy::Nginx;
use crate::traces::{client_traceparent, port_of, traced, Receiver, CLIENT_SPAN, CLIENT_TRACE};

#[tokio::test]
async fn login_set_name_and_get_name_are_one_trace_without_secrets() {
    let receiver = Receiver::start().await;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let served = traced(1, &receiver.endpoint, &[("REDIS_KEY_PREFIX", &prefix)]).await;
    served.create_user("ada").await;
    let nginx = Nginx::start(port_of(&served), &[]);
    let client = &served.client;

    let login = client
        .post(format!("{}/login", nginx.url))
        .header("traceparent", client_traceparent())
        .json(&json!({ "username": "ada", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let header = login.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = header.strip_prefix("Bearer ").unwrap().to_owned();
    let set = client
        .post(format!("{}/setName", nginx.url))
        .header("traceparent", client_traceparent())
        .bearer_auth(&token)
        .json(&json!({ "name": "Ada Lovelace" }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let got = client
        .get(format!("{}/getName", nginx.url))
        .header("traceparent", client_traceparent())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);

    let routes = ["/login", "/setName", "/getName"];
    let requests_of = |spans: &[crate::traces::ReceivedSpan]| {
        spans
            .iter()
            .filter(|span| span.trace_id == CLIENT_TRACE && span.is_server())
            .filter_map(|span| span.attribute("http.route").map(str::to_owned))
            .collect::<HashSet<_>>()
    };
    let spans = receiver
        .spans_when(|spans| {
            routes
                .iter()
                .all(|route| requests_of(spans).contains(*route))
        })
        .await;
    let ours: Vec<_> = spans
        .iter()
        .filter(|span| span.trace_id == CLIENT_TRACE)
        .collect();
    let requests: HashMap<&str, _> = ours
        .iter()
        .filter(|span| span.is_server())
        .map(|span| (span.span_id.as_str(), *span))
        .collect();
    assert_eq!(requests.len(), 3, "{ours:#?}");
    for request in requests.values() {
        assert_eq!(request.parent_span_id, CLIENT_SPAN, "{request:?}");
        assert_eq!(request.attribute("http.response.status_code"), Some("200"));
        let route = request.attribute("http.route").unwrap();
        assert_eq!(
            request.name,
            format!(
                "{} {route}",
                request.attribute("http.request.method").unwrap()
            )
        );
    }
    // Every PostgreSQL and Redis call is a client span under a request of
    // this trace, saying what kind of call, never with what.
    let calls: Vec<_> = ours.iter().filter(|span| !span.is_server()).collect();
    let systems: HashSet<&str> = calls
        .iter()
        .filter_map(|span| span.attribute("db.system.name"))
        .collect();
    assert_eq!(
        systems,
        HashSet::from(["postgresql", "redis"]),
        "{calls:#?}"
    );
    for call in &calls {
        assert!(
            requests.contains_key(call.parent_span_id.as_str()),
            "not under a request: {call:?}"
        );
        assert!(call.attribute("db.operation.name").is_some(), "{call:?}");
    }
    let operations: HashSet<(&str, &str)> = calls
        .iter()
        .filter_map(|span| {
            Some((
                span.attribute("db.operation.name")?,
                span.attribute("db.collection.name")?,
            ))
        })
        .collect();
    assert!(operations.contains(&("SELECT", "users")), "{operations:?}");
    assert!(operations.contains(&("UPDATE", "users")), "{operations:?}");
    assert!(operations.contains(&("INSERT", "outbox")), "{operations:?}");
    // No secret, and nothing the user typed, in any span of the service.
    for span in &spans {
        for text in &span.texts {
            for secret in [PASSWORD, token.as_str(), "Ada Lovelace"] {
                assert!(!text.contains(secret), "{secret:?} in {span:?}");
            }
        }
    }

    // The name's event carries the trace of the request that changed it.
    let servers = Servers::shared();
    let redis = redis::Client::open(servers.redis_url.as_str()).unwrap();
    let key = format!("{prefix}events");
    let read = || async {
        let mut connection = redis.get_multiplexed_async_connection().await.ok()?;
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .ok()?;
        entries
            .into_iter()
            .find(|(_, fields)| fields.get("type").map(String::as_str) == Some("user.name_changed"))
            .map(|(_, fields)| fields.get("traceparent").cloned().unwrap_or_default())
    };
    let relayed = eventually(Duration::from_secs(15), || async { read().await.is_some() }).await;
    assert!(relayed, "no user.name_changed on the stream");
    let traceparent = read().await.unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "the event's traceparent is {traceparent:?}"
    );
    // A consumer continuing it hangs its span under one of the set name's.
    let parent = traceparent.split('-').nth(2).unwrap();
    assert!(
        ours.iter().any(|span| span.span_id == parent),
        "{parent} is no span of the trace"
    );
}
