use std::time::Duration;

use app::modules::auth::sessions;
use serde_json::Value;

use crate::auth::helpers::{assert_unauthorized, ServedSignIn, SignIn, PASSWORD};
use crate::helpers::{spawn_app, spawn_app_with, Servers};

#[tokio::test]
async fn logout_kills_that_token_at_once_and_only_that_one() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_user("alice").await;
    let other = app.login("alice").await;

    let response = app.post_logout(&token).await;

    assert_eq!(response.status(), 204);
    assert_unauthorized(app.get_name(&token).await).await;
    assert_unauthorized(app.post_logout(&token).await).await;
    assert_eq!(app.get_name(&other).await.status(), 200);
}

#[tokio::test]
async fn protected_endpoints_refuse_missing_malformed_and_unknown_tokens() {
    let app = spawn_app().await;
    for path in ["/getName", "/v2/users?q=alice"] {
        assert_unauthorized(app.get(path).await).await;
        assert_unauthorized(app.get_with_token(path, "not-a-uuid").await).await;
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_unauthorized(app.get_with_token(path, &unknown).await).await;
        let basic = app
            .client
            .get(app.url(path))
            .basic_auth("alice", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_unauthorized(basic).await;
    }
    assert_unauthorized(app.post_logout("not-a-uuid").await).await;
    let set_name = app
        .client
        .post(app.url("/setName"))
        .json(&serde_json::json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_unauthorized(set_name).await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = spawn_app_with(&Servers::shared(), &["--session-ttl-seconds=1"]).await;
    let (_, token) = app.signed_in_user("alice").await;
    assert_eq!(app.get_name(&token).await.status(), 200);

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    assert_unauthorized(app.get_name(&token).await).await;
}

#[tokio::test]
async fn a_session_whose_user_was_deleted_is_refused() {
    let app = spawn_app().await;
    let (id, token) = app.signed_in_user("alice").await;
    let client = app.db.get().await.unwrap();
    client
        .execute("DELETE FROM users WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_unauthorized(app.get_name(&token).await).await;
}

#[tokio::test]
async fn use_keeps_a_session_alive_until_its_lifetime_ends() {
    let limits = ["--session-idle-seconds=2", "--session-ttl-seconds=6"];
    let app = spawn_app_with(&Servers::shared(), &limits).await;
    // The used session last, so that its clocks start after both logins'
    // hashes, however long a loaded machine takes over them.
    let (_, idle) = app.signed_in_user("alice").await;
    let used = app.login("alice").await;

    // Used every 1.2 s, it outlives the 2 s idle timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(app.get_name(&used).await.status(), 200);
    }
    // ...while the unused one has ended.
    assert_unauthorized(app.get_name(&idle).await).await;

    // Nothing outlives the lifetime, however busy.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.get_name(&used).await.status(), 200);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let _ = app.get_name(&used).await;
    }
    assert_unauthorized(app.get_name(&used).await).await;
}

#[tokio::test]
async fn my_sessions_are_listed_without_their_tokens() {
    let app = spawn_app().await;
    let (_, laptop) = app.signed_in_user("alice").await;
    let phone = app.login("alice").await;
    let (_, other) = app.signed_in_user("bob").await;

    let response = app.get_with_token("/v2/sessions", &phone).await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for token in [&laptop, &phone, &other] {
        assert!(!text.contains(token.as_str()), "a token is listed: {text}");
    }
    let sessions: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(sessions.len(), 2, "{text}");
    let current: Vec<bool> = sessions.iter().map(|s| s["current"] == true).collect();
    assert_eq!(current, [false, true], "oldest first, this one marked");
    for session in &sessions {
        assert_eq!(session["id"].as_str().unwrap().len(), 16);
        assert_eq!(session["client_ip"], "127.0.0.1");
        assert!(session["last_seen_at"].as_u64() >= session["created_at"].as_u64());
    }
}

#[tokio::test]
async fn logging_out_everywhere_ends_all_my_sessions_and_no_one_elses() {
    let app = spawn_app().await;
    let (_, laptop) = app.signed_in_user("alice").await;
    let phone = app.login("alice").await;
    let (_, other) = app.signed_in_user("bob").await;

    let response = app
        .client
        .delete(app.url("/v2/sessions"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 204);
    assert_unauthorized(app.get_name(&laptop).await).await;
    assert_unauthorized(app.get_name(&phone).await).await;
    assert_eq!(app.get_name(&other).await.status(), 200);
}

#[tokio::test]
async fn tokens_never_reach_the_log_only_their_public_ids() {
    let served = crate::serving::Served::start(1, &[("RUST_LOG", "debug")]).await;
    served.create_user("alice").await;
    let base = &served.base;
    let login: Value = served
        .client
        .post(format!("{base}/login"))
        .json(&serde_json::json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    for path in ["/getName", "/v2/sessions"] {
        let response = served
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let logout = served
        .client
        .post(format!("{base}/logout"))
        .header("x-request-id", "logout-4711")
        .bearer_auth(&token);
    assert_eq!(logout.send().await.unwrap().status(), 204);

    // Every line of those requests is out once the last one's is.
    let log = served.log_with("logout-4711").await;
    let uuid = uuid::Uuid::parse_str(&token).unwrap();
    assert!(!log.contains(&token), "the token is in the log");
    assert!(
        !log.contains(&uuid.simple().to_string()),
        "the token is in the log"
    );
    let public = app::modules::auth::sessions::public_id(uuid);
    assert!(
        log.contains(&public),
        "the session's public id is not logged:\n{log}"
    );
}

/// Every command Redis receives from now until [`Monitor::stop`], as
/// `MONITOR` prints them: what an operator, or anyone reading its output,
/// sees.
struct Monitor {
    reader: tokio::task::JoinHandle<String>,
    app_redis: redis::Client,
}

impl Monitor {
    async fn start(app: &crate::helpers::TestApp) -> Monitor {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let redis::ConnectionAddr::Tcp(host, port) = app.redis.get_connection_info().addr() else {
            panic!("the test Redis is reached over TCP");
        };
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buffer = [0u8; 8192];
            loop {
                let read = stream.read(&mut buffer).await.unwrap();
                seen.extend_from_slice(&buffer[..read]);
                if read == 0 || seen.windows(12).any(|w| w == b"monitor-done") {
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
        });
        Monitor {
            reader,
            app_redis: app.redis.clone(),
        }
    }

    /// What Redis received, one command a line.
    async fn stop(self) -> String {
        let mut redis = self
            .app_redis
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: String = redis::cmd("ECHO")
            .arg("monitor-done")
            .query_async(&mut redis)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.reader)
            .await
            .expect("MONITOR saw the closing ECHO")
            .unwrap()
    }
}

/// Sessions are keyed by a hash of the token: no key name, no command
/// (and so no RDB or AOF file, no `MONITOR` output) holds a token.
#[tokio::test]
async fn redis_never_sees_a_token_neither_in_key_names_nor_in_commands() {
    let app = spawn_app().await;
    app.create_user("alice").await;
    let monitor = Monitor::start(&app).await;

    let token = app.login("alice").await;
    assert_eq!(app.get_name(&token).await.status(), 200);
    assert_eq!(
        app.get_with_token("/v2/sessions", &token).await.status(),
        200
    );
    let keys: Vec<String> = {
        let mut redis = app.redis.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}*", app.settings.redis.key_prefix))
            .query_async(&mut redis)
            .await
            .unwrap()
    };
    assert_eq!(app.post_logout(&token).await.status(), 204);
    let commands = monitor.stop().await;

    let uuid = uuid::Uuid::parse_str(&token).unwrap();
    let spellings = [token.clone(), uuid.simple().to_string()];
    assert!(
        keys.iter().any(|key| key.contains("session:")),
        "the session is stored: {keys:?}"
    );
    for spelling in &spellings {
        assert!(
            !keys.iter().any(|key| key.contains(spelling.as_str())),
            "a key is named by the token: {keys:?}"
        );
        assert!(
            !commands.contains(spelling.as_str()),
            "Redis received the token"
        );
    }
    assert!(commands.contains(&sessions::digest(uuid)), "{commands}");
}

/// Listing my sessions is one round trip to Redis however many there are
/// (one more checks the token), and answers what it should.
#[tokio::test]
async fn my_sessions_are_listed_in_one_round_trip() {
    let app = spawn_app_with(&Servers::shared(), &["--rate-limit-per-minute", "0"]).await;
    let (_, token) = app.signed_in_user("alice").await;
    for _ in 0..3 {
        app.login("alice").await;
    }
    // Once first, so that the scripts are loaded in Redis.
    assert_eq!(
        app.get_with_token("/v2/sessions", &token).await.status(),
        200
    );
    let monitor = Monitor::start(&app).await;

    let listed = app.get_with_token("/v2/sessions", &token).await;

    let commands = monitor.stop().await;
    let listed: Vec<Value> = listed.json().await.unwrap();
    assert_eq!(listed.len(), 4);
    let prefix = &app.settings.redis.key_prefix;
    let round_trips: Vec<&str> = commands
        .lines()
        .filter(|line| !line.contains(" lua]"))
        .filter(|line| {
            line.contains(&format!("{prefix}session:"))
                || line.contains(&format!("{prefix}user-sessions:"))
        })
        .collect();
    assert_eq!(round_trips.len(), 2, "{round_trips:#?}");
}

/// No user has more than SESSIONS_PER_USER sessions: a login past it ends
/// the oldest.
#[tokio::test]
async fn a_login_past_the_limit_ends_the_users_oldest_session() {
    let app = spawn_app_with(&Servers::shared(), &["--sessions-per-user", "3"]).await;
    let (_, first) = app.signed_in_user("alice").await;
    let mut tokens = vec![first];
    for _ in 0..4 {
        tokens.push(app.login("alice").await);
    }

    for oldest in &tokens[..2] {
        assert_unauthorized(app.get_name(oldest).await).await;
    }
    for newest in &tokens[2..] {
        assert_eq!(app.get_name(newest).await.status(), 200);
    }
    let listed: Vec<Value> = app
        .get_with_token("/v2/sessions", &tokens[4])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
}

/// Sessions that end by themselves (unused past SESSION_IDLE_SECONDS) leave
/// no trace in the user's set of sessions: it holds only live ones.
#[tokio::test]
async fn ended_sessions_do_not_pile_up_in_the_users_set() {
    let app = spawn_app_with(&Servers::shared(), &["--session-idle-seconds", "1"]).await;
    let (user, _) = app.signed_in_user("alice").await;
    for _ in 0..4 {
        app.login("alice").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    app.login("alice").await;

    let key = format!("{}user-sessions:{user}", app.settings.redis.key_prefix);
    let mut redis = app.redis.get_multiplexed_async_connection().await.unwrap();
    let members: i64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(members, 1);
}
