//! Events for other services: each change, committed, ends up on the Redis
//! stream through the outbox, even when Redis was away when it was made.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use app::modules::auth::users;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::helpers::{ServedSignIn, SignIn, PASSWORD};
use crate::helpers::{spawn_app, spawn_app_with, DedicatedServices, Servers, TestApp};
use crate::serving::Served;

/// One stream entry, as a consumer reads it.
#[derive(Debug)]
pub struct Entry {
    pub event_id: String,
    pub kind: String,
    pub user_id: i64,
    pub data: Value,
    pub fields: HashMap<String, String>,
}

/// The app's event stream, from the start.
pub async fn stream(app: &TestApp) -> Vec<Entry> {
    read_stream(app).await.unwrap()
}

/// The key of the app's event stream.
fn stream_key(app: &TestApp) -> String {
    format!("{}events", app.settings.redis.key_prefix)
}

/// The stream, or why Redis could not give it (say, it is still loading
/// its data after a restart).
async fn read_stream(app: &TestApp) -> redis::RedisResult<Vec<Entry>> {
    read_stream_at(&app.redis, &stream_key(app)).await
}

async fn read_stream_at(redis: &redis::Client, key: &str) -> redis::RedisResult<Vec<Entry>> {
    let mut redis = redis.get_multiplexed_async_connection().await?;
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await?;
    Ok(entries
        .into_iter()
        .map(|(_, flat)| {
            let fields: HashMap<String, String> = flat
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            Entry {
                event_id: fields["event_id"].clone(),
                kind: fields["type"].clone(),
                user_id: fields["user_id"].parse().unwrap(),
                data: serde_json::from_str(&fields["data"]).unwrap(),
                fields,
            }
        })
        .collect())
}

/// The stream once it holds `count` entries (or what it holds after 15 s,
/// Redis answering or not until then).
pub async fn stream_of(app: &TestApp, count: usize) -> Vec<Entry> {
    stream_at(&app.redis, &stream_key(app), count).await
}

/// As [`stream_of`], for the stream at `key` (a served process's).
async fn stream_at(redis: &redis::Client, key: &str, count: usize) -> Vec<Entry> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let entries = match read_stream_at(redis, key).await {
            Ok(entries) => entries,
            Err(_) if Instant::now() < deadline => Vec::new(),
            Err(err) => panic!("the stream cannot be read: {err}"),
        };
        if entries.len() >= count || Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn waiting_in_outbox(app: &TestApp) -> i64 {
    let client = app.db.get().await.unwrap();
    let row = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap();
    row.get(0)
}

/// What is left in the outbox once the relay has had up to 5 s to delete
/// what it sent (it deletes just after sending, so a reader of the stream
/// can be a moment ahead of it).
async fn left_in_outbox(app: &TestApp) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting = waiting_in_outbox(app).await;
        if waiting == 0 || Instant::now() > deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_unique_ids(entries: &[Entry]) {
    let ids: HashSet<&str> = entries.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), entries.len(), "an event id repeats");
    for id in ids {
        assert_eq!(Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }
}

#[tokio::test]
async fn every_kind_of_change_is_published_in_order() {
    let app = spawn_app().await;
    let (id, token) = app.signed_in_user("ada").await;
    let renamed = app
        .post_set_name(&token, &json!({ "name": "Ada L." }))
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(
        app.post_logout(&token).await.status(),
        StatusCode::NO_CONTENT
    );

    let entries = stream_of(&app, 4).await;

    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user.created",
            "user.logged_in",
            "user.name_changed",
            "user.logged_out"
        ]
    );
    assert!(entries.iter().all(|e| e.user_id == id));
    assert_eq!(entries[0].data["username"], "ada");
    assert_eq!(entries[0].data["role"], "user");
    assert_eq!(entries[2].data, json!({ "user_id": id, "name": "Ada L." }));
    // Logins and logouts name the session by its public id, never the token.
    let session = entries[1].data["session"].as_str().unwrap();
    assert_eq!(entries[3].data["session"], session);
    for entry in &entries {
        assert!(!entry.fields.values().any(|v| v.contains(&token)));
        assert!(entry.fields["occurred_at"].ends_with('Z'));
    }
    assert_unique_ids(&entries);
    assert_eq!(
        left_in_outbox(&app).await,
        0,
        "relayed events stay in the outbox"
    );
}

/// An idle relay looks for events ever less often (each empty look doubles
/// its wait, up to 5 s), yet a change the service makes after a quiet
/// spell is on the stream at once: writing its event wakes the relay. In a
/// served worker, a process of its own: the wake reaches every relay of a
/// process, and this test binary's other apps write events all the time.
#[tokio::test]
async fn after_a_quiet_spell_a_change_is_published_at_once() {
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let served = Served::start(1, &[("REDIS_KEY_PREFIX", &prefix)]).await;
    served.create_user("ada").await;
    let login = served
        .client
        .post(format!("{}/login", served.base))
        .json(&json!({ "username": "ada", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK, "{}", served.log());
    let token = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let redis = redis::Client::open(Servers::shared().redis_url).unwrap();
    let key = format!("{prefix}events");
    let before = stream_at(&redis, &key, 1).await.len();
    assert!(before >= 1, "the login's event was never published");
    // Long enough for the relay's wait to reach its longest: unwoken, it
    // would next look 4 s or more after the change below.
    tokio::time::sleep(Duration::from_secs(7)).await;

    let started = Instant::now();
    let renamed = served
        .client
        .post(format!("{}/setName", served.base))
        .bearer_auth(&token)
        .json(&json!({ "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let after = stream_at(&redis, &key, before + 1).await;
    let took = started.elapsed();

    assert_eq!(
        after.len(),
        before + 1,
        "the name change was never published"
    );
    assert_eq!(after[before].kind, "user.name_changed");
    assert!(
        took < Duration::from_millis(2500),
        "published after {took:?}"
    );
}

#[tokio::test]
async fn a_name_change_for_a_user_no_longer_there_records_no_event() {
    let app = spawn_app().await;
    let (id, _) = app.signed_in_user("ada").await;
    let client = app.db.get().await.unwrap();
    client
        .execute("DELETE FROM users WHERE id = $1", &[&id])
        .await
        .unwrap();

    // The event is written by the statement that updates the row, so it
    // must be written only when a row was updated.
    let changed = users::set_name(&client, id, "Ghost").await.unwrap();

    assert!(changed.is_none());
    assert_eq!(left_in_outbox(&app).await, 0);
    let kinds: Vec<String> = stream(&app).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["user.created", "user.logged_in"]);
}

/// The event each operation that changes state publishes. A new operation
/// other than GET fails the test below until it is added here.
fn event_of(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("post", "/login") => "user.logged_in",
        ("post", "/logout") | ("delete", "/v2/sessions") => "user.logged_out",
        ("post", "/setName") => "user.name_changed",
        ("post", "/v2/password") => "user.password_changed",
        ("put", "/v2/users/{id}/role") => "user.role_changed",
        ("delete", "/v2/users/{id}/sessions") => "user.sessions_ended",
        _ => return None,
    })
}

/// Walks the OpenAPI document: every operation that changes state, done to
/// a fresh user, puts its event about that user on the stream.
#[tokio::test]
async fn every_mutating_operation_publishes_its_event() {
    let app = spawn_app().await;
    let (admin_id, admin) = app.signed_in_admin("boss").await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if method == "get" {
                continue;
            }
            let kind = event_of(method, path)
                .unwrap_or_else(|| panic!("{method} {path}: which event does it publish?"));
            checked += 1;
            let username = format!("user{checked}");
            let (user, token) = app.signed_in_user(&username).await;
            let target = path.replace("{id}", &user.to_string());
            let request = match method.as_str() {
                "post" => app.client.post(app.url(&target)),
                "put" => app.client.put(app.url(&target)),
                "delete" => app.client.delete(app.url(&target)),
                other => panic!("{other} {path}: no call for this method"),
            };
            let bearer = if target.starts_with("/v2/users/") {
                &admin
            } else {
                &token
            };
            let body = match path.as_str() {
                "/login" => json!({ "username": username, "password": PASSWORD }),
                "/setName" => json!({ "name": "Renamed" }),
                "/v2/password" => {
                    json!({ "current_password": PASSWORD, "new_password": "a new password" })
                }
                "/v2/users/{id}/role" => json!({ "role": "admin" }),
                _ => Value::Null,
            };
            let request = request.bearer_auth(bearer);
            let request = if body.is_null() {
                request
            } else {
                request.json(&body)
            };
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{method} {path}: {}",
                response.status()
            );

            let deadline = Instant::now() + Duration::from_secs(15);
            let published = loop {
                let entries = stream(&app).await;
                let found = entries
                    .into_iter()
                    .filter(|e| e.user_id == user && e.kind == kind)
                    // Signing the user in above published one login already.
                    .nth(usize::from(kind == "user.logged_in"));
                if found.is_some() || Instant::now() > deadline {
                    break found;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let entry = published.unwrap_or_else(|| panic!("{method} {path}: no {kind}"));
            if target.starts_with("/v2/users/") {
                assert_eq!(entry.data["by"], admin_id, "{method} {path}");
            }
        }
    }
    assert_eq!(checked, 7, "the operations that change state");
}

#[tokio::test]
async fn names_changed_while_redis_is_down_all_arrive_once_it_is_back() {
    let services = DedicatedServices::start();
    let app = spawn_app_with(&services.servers(), &[]).await;
    let (id, token) = app.signed_in_user("ada").await;
    let first = app.post_set_name(&token, &json!({ "name": "Ada 0" })).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(stream_of(&app, 3).await.len(), 3);

    services.stop_redis();
    // No request can sign in now; the service's own writes go on, through
    // the same function /setName uses, from several tasks at once.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let pool = app.db.clone();
        writers.push(tokio::spawn(async move {
            let client = pool.get().await.unwrap();
            for i in 0..10 {
                let name = format!("Ada {writer}-{i}");
                users::set_name(&client, id, &name).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        waiting_in_outbox(&app).await,
        40,
        "the events wait in the outbox"
    );

    services.start_redis();

    let entries = stream_of(&app, 43).await;
    assert_eq!(entries.len(), 43, "events lost: {entries:#?}");
    assert_unique_ids(&entries);
    let names: Vec<&str> = entries[3..]
        .iter()
        .map(|e| {
            assert_eq!(e.kind, "user.name_changed");
            e.data["name"].as_str().unwrap()
        })
        .collect();
    // Each writer's changes arrive in the order it made them.
    for writer in 0..4 {
        let own: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with(&format!("Ada {writer}-")))
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("Ada {writer}-{i}")).collect();
        assert_eq!(own, expected);
    }
    assert_eq!(left_in_outbox(&app).await, 0);
}
