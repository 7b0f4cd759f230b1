//! /getName reads through a Redis cache; /setName keeps it right. First
//! writers, readers and an evictor race through the API (the commit order
//! of the names comes from the event stream afterwards); then the races
//! that matter are played out step by step against the cache itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::modules::auth::names::NameCache;
use app::storage::redis::Redis;
use serde_json::{json, Value};

use crate::auth::events::stream_of;
use crate::auth::helpers::SignIn;
use crate::helpers::{spawn_app, TestApp};

const WRITERS: usize = 4;
const CHANGES: usize = 15;

async fn name(app: &TestApp, token: &str) -> String {
    let response = app.get_name(token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["name"].as_str().unwrap().to_owned()
}

/// Every name the user was given, in the order the changes committed (the
/// event stream's order), after the user's creation and login.
async fn commit_order(app: &TestApp, changes: usize) -> Vec<String> {
    let entries = stream_of(app, 2 + changes).await;
    let names: Vec<String> = entries
        .iter()
        .filter(|entry| entry.kind == "user.name_changed")
        .map(|entry| entry.data["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), changes, "name changes missing from the stream");
    names
}

#[tokio::test]
async fn once_set_name_has_answered_no_one_reads_the_name_it_replaced() {
    let app = Arc::new(spawn_app().await);
    let (id, token) = app.signed_in_user("ada").await;
    let token = Arc::new(token);
    let done = Arc::new(AtomicBool::new(false));

    // Readers keep reading, noting when each read began; with the evictor
    // they keep missing the cache and filling it while names change.
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (app, token, done) = (app.clone(), token.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let began = Instant::now();
                reads.push((began, name(&app, &token).await));
            }
            reads
        }));
    }
    let evictor = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            let mut redis = app.redis.get_multiplexed_async_connection().await.unwrap();
            let prefix = &app.settings.redis.key_prefix;
            let keys = [
                format!("{prefix}name:{id}"),
                format!("{prefix}name-lease:{id}"),
            ];
            let mut evictions = 0;
            while !done.load(Ordering::Relaxed) {
                let key = &keys[evictions % 3 / 2];
                let _: () = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                evictions += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Writers note when each change answered, and read right after it too.
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (app, token) = (app.clone(), token.clone());
        writers.push(tokio::spawn(async move {
            let (mut answered, mut reads) = (Vec::new(), Vec::new());
            for change in 0..CHANGES {
                let mine = format!("w{writer}-{change}");
                let set = app.post_set_name(&token, &json!({ "name": mine })).await;
                assert_eq!(set.status(), 200);
                answered.push((Instant::now(), mine));
                let began = Instant::now();
                reads.push((began, name(&app, &token).await));
            }
            (answered, reads)
        }));
    }
    let (mut answered, mut reads) = (Vec::new(), Vec::new());
    for writer in writers {
        let (their_answers, their_reads) = writer.await.unwrap();
        answered.extend(their_answers);
        reads.extend(their_reads);
    }
    done.store(true, Ordering::Relaxed);
    evictor.await.unwrap();
    for reader in readers {
        let their_reads = reader.await.unwrap();
        assert!(their_reads.len() > 10, "a reader hardly read");
        reads.extend(their_reads);
    }

    let order = commit_order(&app, WRITERS * CHANGES).await;
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(rank, name)| (name.as_str(), rank + 1))
        .collect();
    // "ada" is the name before any change.
    let rank_of = |name: &str| rank.get(name).copied().unwrap_or(0);
    // The contract: a read that began after a change answered gives that
    // name or a later one. (A read during a change may give either side.)
    for (began, read) in &reads {
        let newest_answered = answered
            .iter()
            .filter(|(at, _)| at < began)
            .max_by_key(|(_, name)| rank_of(name));
        if let Some((_, name)) = newest_answered {
            assert!(
                rank_of(read) >= rank_of(name),
                "a read after {name} had answered gave the older {read}"
            );
        }
    }
    // And it settles on the last committed name.
    assert_eq!(name(&app, &token).await, *order.last().unwrap());
}

#[tokio::test]
async fn get_name_is_served_from_the_cache_once_filled() {
    let app = spawn_app().await;
    let (id, token) = app.signed_in_user("bob").await;
    assert_eq!(name(&app, &token).await, "bob");

    // Changed behind the service's back, the cached name is what it serves:
    // proof that it reads the cache, not PostgreSQL.
    let client = app.db.get().await.unwrap();
    client
        .execute(
            "UPDATE users SET name = 'changed directly' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(name(&app, &token).await, "bob");

    // A change through the service replaces it at once.
    let set = app
        .post_set_name(&token, &json!({ "name": "Bob B." }))
        .await;
    assert_eq!(set.status(), 200);
    assert_eq!(name(&app, &token).await, "Bob B.");
}

/// The cache of a running app's Redis, to play out interleavings one step
/// at a time.
async fn cache_of(app: &TestApp) -> NameCache {
    NameCache::new(Redis::new(&app.settings.redis).unwrap())
}

async fn evict(app: &TestApp, key: &str) {
    let mut redis = app.redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}{key}", app.settings.redis.key_prefix);
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reader_that_read_before_a_change_cannot_cache_the_old_name() {
    let app = spawn_app().await;
    let cache = cache_of(&app).await;
    // A reader misses, takes the lease and reads "old" (version 1)...
    let lease = cache.lease(7).await.unwrap().expect("the lease is free");
    // ...a change commits "new" (version 2) and answers; the entry is
    // evicted meanwhile...
    cache.changed(7, "new", 2).await.unwrap();
    evict(&app, "name:7").await;
    // ...and the reader fills late: dropped, the lease was revoked.
    cache.fill(lease, "old", 1).await.unwrap();
    assert_eq!(cache.get(7).await.unwrap(), None);

    // The next reader reads after the change, so it caches the new name.
    let lease = cache.lease(7).await.unwrap().unwrap();
    cache.fill(lease, "new", 2).await.unwrap();
    assert_eq!(cache.get(7).await.unwrap().as_deref(), Some("new"));
}

#[tokio::test]
async fn a_late_writer_cannot_put_its_older_name_back() {
    let app = spawn_app().await;
    let cache = cache_of(&app).await;
    let lease = cache.lease(8).await.unwrap().unwrap();
    cache.fill(lease, "v1", 1).await.unwrap();

    // Two changes commit as 2 and 3; the later one answers first.
    cache.changed(8, "v3", 3).await.unwrap();
    cache.changed(8, "v2", 2).await.unwrap();
    assert_eq!(cache.get(8).await.unwrap().as_deref(), Some("v3"));

    // Evicted, the entry is not brought back by a late writer either.
    evict(&app, "name:8").await;
    cache.changed(8, "v2", 2).await.unwrap();
    assert_eq!(cache.get(8).await.unwrap(), None);
}

#[tokio::test]
async fn a_reader_whose_lease_was_evicted_does_not_fill() {
    let app = spawn_app().await;
    let cache = cache_of(&app).await;
    let lease = cache.lease(9).await.unwrap().unwrap();
    // Only one reader fills at a time; the others just read.
    assert!(cache.lease(9).await.unwrap().is_none());
    evict(&app, "name-lease:9").await;
    cache.fill(lease, "maybe old", 1).await.unwrap();
    assert_eq!(cache.get(9).await.unwrap(), None);
}
