//! Forward auth: nginx.conf's commented example, enabled, guarding a
//! stand-in for another service with this service's sessions.

use std::collections::BTreeMap;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Json;
use poem::{handler, Request, Route, Server};
use reqwest::StatusCode;
use serde_json::Value;

use crate::auth::helpers::SignIn;
use crate::helpers::{assert_problem, repo_root, spawn_app, TestApp};
use crate::proxy::Nginx;

/// nginx.conf with the forward-auth example uncommented, guarding
/// `/orders/` on `upstream`.
fn with_forward_auth(upstream: &str) -> String {
    let conf = std::fs::read_to_string(repo_root().join("nginx.conf")).unwrap();
    let mut enabled = Vec::new();
    let mut inside = false;
    for line in conf.lines() {
        if line.trim() == "# BEGIN forward-auth example" {
            inside = true;
        } else if line.trim() == "# END forward-auth example" {
            inside = false;
        } else if inside {
            let indent = &line[..line.len() - line.trim_start().len()];
            let code = line.trim_start().trim_start_matches('#');
            enabled.push([indent, code.strip_prefix(' ').unwrap_or(code)].concat());
            continue;
        }
        enabled.push(line.to_owned());
    }
    assert!(!inside, "the example has no END marker");
    let conf = enabled.join("\n");
    assert!(
        conf.contains("proxy_pass http://orders:8000/;"),
        "the example changed"
    );
    conf.replace("http://orders:8000/", &format!("http://{upstream}/"))
}

/// Another service: it answers with the request headers it received.
async fn stand_in() -> String {
    #[handler]
    fn echo(request: &Request) -> Json<BTreeMap<String, String>> {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
            .collect();
        Json(headers)
    }
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let address = acceptor.local_addr()[0]
        .as_socket_addr()
        .unwrap()
        .to_string();
    // nginx strips the /orders prefix.
    let app = Route::new().at("/42", echo);
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    address
}

struct Guarded {
    app: TestApp,
    nginx: Nginx,
    _conf: tempfile::TempDir,
}

async fn guarded() -> Guarded {
    let app = spawn_app().await;
    let api_port = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("nginx.conf");
    std::fs::write(&conf, with_forward_auth(&stand_in().await)).unwrap();
    let nginx = Nginx::start(api_port, &[("NGINX_CONF_FILE", conf.to_str().unwrap())]);
    Guarded {
        app,
        nginx,
        _conf: conf_dir,
    }
}

impl Guarded {
    async fn order(&self, token: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.app.client.get(format!("{}/orders/42", self.nginx.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn without_a_valid_token_nginx_refuses_before_the_upstream_sees_anything() {
    let guarded = guarded().await;
    assert_problem(guarded.order(None, &[]).await, 401).await;
    let unknown = "6f1f7e58-3c43-4a29-9f63-1f2bb1cfa1d1";
    assert_problem(guarded.order(Some(unknown), &[]).await, 401).await;
    assert_problem(guarded.order(Some("not-a-uuid"), &[]).await, 401).await;
}

#[tokio::test]
async fn a_valid_token_passes_with_who_it_belongs_to() {
    let guarded = guarded().await;
    let id = guarded.app.create_user("ada").await;
    let token = guarded.app.login("ada").await;

    let response = guarded.order(Some(&token), &[]).await;

    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["x-user-id"], id.to_string());
    assert_eq!(seen["x-user-name"], "ada");
    assert_eq!(seen["x-user-role"], "user");
    // The usual proxy headers still reach it.
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert!(seen["x-request-id"].is_string());
}

#[tokio::test]
async fn identity_headers_a_client_sends_are_replaced_or_dropped() {
    let guarded = guarded().await;
    let id = guarded.app.create_user("bob").await;
    let token = guarded.app.login("bob").await;
    let forged = [
        ("X-User-Id", "1"),
        ("X-User-Name", "root"),
        ("X-User-Role", "admin"),
    ];

    let seen: Value = guarded
        .order(Some(&token), &forged)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["x-user-id"], id.to_string());
    assert_eq!(seen["x-user-name"], "bob");
    assert_eq!(seen["x-user-role"], "user");

    // Nor do they reach the service itself through nginx.
    let direct = guarded
        .app
        .client
        .get(format!("{}/v1/hello", guarded.nginx.url))
        .header("X-User-Role", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_logged_out_token_is_refused() {
    let guarded = guarded().await;
    guarded.app.create_user("carol").await;
    let token = guarded.app.login("carol").await;
    assert_eq!(
        guarded.order(Some(&token), &[]).await.status(),
        StatusCode::OK
    );

    let logout = guarded
        .app
        .client
        .post(format!("{}/logout", guarded.nginx.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    assert_problem(guarded.order(Some(&token), &[]).await, 401).await;
}

#[tokio::test]
async fn the_verify_endpoint_is_not_reachable_through_nginx() {
    let guarded = guarded().await;
    guarded.app.create_user("dave").await;
    let token = guarded.app.login("dave").await;
    let response = guarded
        .app
        .client
        .get(format!("{}/auth/verify", guarded.nginx.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404).await;

    // On the service's own port it answers.
    let direct = guarded.app.get_with_token("/auth/verify", &token).await;
    assert_eq!(direct.status(), StatusCode::OK);
    assert_eq!(direct.headers()["x-user-name"], "dave");
}
