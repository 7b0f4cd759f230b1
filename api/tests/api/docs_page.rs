//! The docs page (`/docs`, api/src/routes/docs.rs) in a real browser:
//! headless Chromium (Debian's `chromium`), driven over WebDriver through
//! `chromedriver` (`chromium-driver`), both installed by the test command,
//! with the page served through nginx with the shipped nginx.conf and its
//! Content-Security-Policy. Each state is saved as a PNG screenshot under
//! the target directory's `test-output/docs_page/`, to look at when a test
//! fails.
//!
//! [`Browser`] is the harness; the feature modules' own docs-page tests use
//! it too.

use std::collections::BTreeSet;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::helpers::{free_port, spawn_app, spawn_app_with, spawn_app_with_policy, Servers};
use crate::proxy::{behind_nginx, Proxied};
use crate::versioning::DEPRECATE_V1;

/// The most a whole browser test may take: past it, it fails (and its
/// browser is killed) rather than hang the suite.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The most one wait for the page (a render, a switch, an answer) may take.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Runs a browser test's body within [`TEST_LIMIT`]. On time out the body
/// is dropped, and with it its [`Browser`], whose chromedriver and Chromium
/// are killed.
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .unwrap_or_else(|_| panic!("the browser test took more than {TEST_LIMIT:?}"))
}

/// Run in every document before the page's own scripts (through the
/// DevTools protocol, below), it records into `window.__problems`:
/// - CSP violations (`securitypolicyviolation` events, which Chromium fires
///   for every blocked script, style, image, fetch or frame);
/// - uncaught errors, a resource (script, style, image) that failed to
///   load included (`error` events, seen in the capture phase because
///   those do not bubble), and unhandled promise rejections;
/// - what the page logs with `console.error`.
///
/// The DevTools protocol's `Page.addScriptToEvaluateOnNewDocument` (sent
/// through chromedriver's `goog/cdp/execute`, [`AddScript`]) is what runs
/// it early enough: a script run through WebDriver after loading would miss
/// what happens while the page loads, which is when a CSP blocks its
/// scripts. A script added this way is not subject to the page's CSP
/// itself. (chromedriver's browser log, the other way, also holds
/// Chromium's own noise, such as a missing favicon, and tells a CSP
/// violation only by its wording.)
const WATCH: &str = r#"
(() => {
  const problems = [];
  Object.defineProperty(window, "__problems", { value: problems });
  document.addEventListener("securitypolicyviolation", (event) => {
    problems.push(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"} (${event.sourceFile}:${event.lineNumber})`);
  }, true);
  window.addEventListener("error", (event) => {
    if (event.target && event.target !== window) {
      const target = event.target;
      problems.push(`failed to load: <${target.tagName?.toLowerCase()}> ${target.src || target.href || ""}`);
    } else {
      problems.push(`error: ${event.message} (${event.filename}:${event.lineno})`);
    }
  }, true);
  window.addEventListener("unhandledrejection", (event) => {
    problems.push(`unhandled rejection: ${event.reason}`);
  });
  const error = console.error.bind(console);
  console.error = (...args) => {
    problems.push(`console.error: ${args.map(String).join(" ")}`);
    error(...args);
  };
})();
"#;

/// chromedriver's DevTools command `Page.addScriptToEvaluateOnNewDocument`
/// with this source, which fantoccini has no call of its own for.
#[derive(Debug)]
struct AddScript(&'static str);

impl WebDriverCompatibleCommand for AddScript {
    fn endpoint(&self, base: &url::Url, id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": { "source": self.0 },
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// chromedriver on a free port, killed on drop with the Chromium it
/// started: it runs in a process group of its own, and the whole group goes.
struct ChromeDriver {
    child: Child,
    url: String,
    /// Chromium's profile, a fresh one per browser.
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver: run scripts/services.sh ensure-packages chromium");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::Builder::new()
                .prefix("chromium-")
                .tempdir()
                .unwrap(),
        };
        let status = driver.url.clone() + "/status";
        let client = reqwest::Client::new();
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let ready = match client
                .get(&status)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver is not ready on {}",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Its own group (process_group(0)): its id is the group's.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// An operation as shown on the page, or as a document lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub deprecated: bool,
}

/// The operations `document` lists.
pub fn operations_of(document: &Value) -> BTreeSet<Operation> {
    app::openapi::paths(document)
        .flat_map(|(path, item)| {
            app::openapi::operations(item).map(move |(method, operation)| Operation {
                method: method.to_owned(),
                path: path.clone(),
                deprecated: operation["deprecated"] == true,
            })
        })
        .collect()
}

/// Headless Chromium with the page's problems watched ([`WATCH`]).
pub struct Browser {
    pub client: Client,
    // Dropped after the client: kills chromedriver and Chromium.
    driver: ChromeDriver,
}

impl Browser {
    pub async fn start() -> Browser {
        let driver = ChromeDriver::start().await;
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", driver.profile.path().display()),
            "--window-size=1280,1600".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
        ];
        // Chromium refuses to run as root with its sandbox on. /proc/self
        // belongs to the effective user.
        if std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0) {
            args.push("--no-sandbox".to_owned());
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args },
            "timeouts": { "pageLoad": 20_000, "script": 10_000, "implicit": 0 },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("chromedriver starts Chromium");
        client
            .issue_cmd(AddScript(WATCH))
            .await
            .expect("the watch script is added");
        Browser { client, driver }
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// What [`WATCH`] recorded on the current page.
    pub async fn problems(&self) -> Vec<String> {
        let problems = self
            .run("return window.__problems ? Array.from(window.__problems) : ['the watch script did not run'];")
            .await;
        serde_json::from_value(problems).unwrap()
    }

    /// Asserts the page has had no CSP violation, no error and no
    /// `console.error` so far.
    pub async fn assert_no_problems(&self, state: &str) {
        let problems = self.problems().await;
        assert!(problems.is_empty(), "{state}: {problems:#?}");
    }

    /// Saves a screenshot as `test-output/docs_page/<state>.png` in the
    /// target directory.
    pub async fn shot(&self, state: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = output_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{state}.png")), png).unwrap();
    }

    /// The element `css` finds, waited for at most [`WAIT_LIMIT`].
    pub async fn element(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT_LIMIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                self.shot("element-timeout").await;
                panic!(
                    "{css}: {e}; the page's problems: {:#?}",
                    self.problems().await
                )
            }
        }
    }

    /// The operations Swagger UI shows.
    pub async fn shown_operations(&self) -> BTreeSet<Operation> {
        serde_json::from_value::<Vec<(String, String, bool)>>(self.run(SHOWN).await)
            .unwrap()
            .into_iter()
            .map(|(method, path, deprecated)| Operation {
                method,
                path,
                deprecated,
            })
            .collect()
    }

    /// Waits until Swagger UI shows exactly `expected`, then saves the
    /// screenshot of `state` and asserts that nothing went wrong so far. A
    /// problem fails it at once: a page whose scripts were blocked would
    /// never show anything.
    pub async fn expect_operations(&self, state: &str, expected: &BTreeSet<Operation>) {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let shown = self.shown_operations().await;
            if &shown == expected {
                break;
            }
            let problems = self.problems().await;
            if !problems.is_empty() {
                self.shot(&format!("{state}-problems")).await;
                panic!("{state}: {problems:#?}");
            }
            if Instant::now() >= deadline {
                self.shot(&format!("{state}-timeout")).await;
                let problems = self.problems().await;
                panic!(
                    "{state}: the page shows {} operations\nmissing: {:#?}\nextra: {:#?}\nthe page's problems: {problems:#?}",
                    shown.len(),
                    expected.difference(&shown).collect::<Vec<_>>(),
                    shown.difference(expected).collect::<Vec<_>>(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shot(state).await;
        self.assert_no_problems(state).await;
    }

    /// The version menu's options: (value, label).
    pub async fn menu(&self) -> Vec<(String, String)> {
        let options = self
            .run("return Array.from(document.querySelectorAll('#version option')).map(o => [o.value, o.textContent]);")
            .await;
        serde_json::from_value(options).unwrap()
    }

    /// Picks the menu's option for the document at `document_path`.
    pub async fn pick(&self, document_path: &str) {
        self.element("#version")
            .await
            .select_by_value(document_path)
            .await
            .unwrap_or_else(|e| panic!("pick {document_path}: {e}"));
    }

    /// Quits Chromium through chromedriver; the drop that follows kills
    /// chromedriver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        drop(self.driver);
    }
}

/// Each operation block Swagger UI rendered: method, path, deprecated.
const SHOWN: &str = r##"
return Array.from(document.querySelectorAll("#ui .opblock")).map((block) => [
  (block.querySelector(".opblock-summary-method")?.textContent ?? "").toLowerCase(),
  // .opblock-summary-path, or .opblock-summary-path__deprecated
  block.querySelector(".opblock-summary [data-path]")?.getAttribute("data-path") ?? "",
  block.classList.contains("opblock-deprecated"),
]);
"##;

/// `target/test-output/docs_page`, beside cargo's `target/tmp`.
fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-output/docs_page")
}

/// A served document, fetched through nginx.
pub async fn document(proxied: &Proxied, path: &str) -> Value {
    let response = proxied.app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// The HTTP status of the page the browser shows (Chromium's navigation
/// timing has it).
async fn navigation_status(browser: &Browser) -> Value {
    browser
        .run("return performance.getEntriesByType('navigation')[0]?.responseStatus ?? null;")
        .await
}

#[tokio::test]
async fn the_docs_page_shows_every_operation_and_each_version_under_the_csp_without_errors() {
    let proxied = behind_nginx(spawn_app().await, &[]);
    let docs = proxied.app.url("/docs");
    let page = proxied.app.get("/docs").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src"), "the shipped CSP is on: {csp}");
    let whole = document(&proxied, "/openapi.json").await;
    let versions = app::openapi::versions_in(&whole);
    assert!(!versions.is_empty());

    bounded(async {
        let browser = Browser::start().await;
        browser.open(&docs).await;
        browser
            .expect_operations("whole_api", &operations_of(&whole))
            .await;

        let mut expected_menu = vec![("/openapi.json".to_owned(), "whole API".to_owned())];
        for version in &versions {
            expected_menu.push((format!("/{version}/openapi.json"), version.clone()));
        }
        assert_eq!(browser.menu().await, expected_menu);

        for version in &versions {
            let path = format!("/{version}/openapi.json");
            let own = operations_of(&document(&proxied, &path).await);
            assert!(
                own.iter()
                    .all(|op| op.path.starts_with(&format!("/{version}/"))),
                "{path} lists only {version}'s operations: {own:#?}"
            );
            browser.pick(&path).await;
            browser.expect_operations(version, &own).await;
            let url = browser.client.current_url().await.unwrap();
            assert!(
                url.query()
                    .is_some_and(|q| q.contains(&format!("version={version}"))),
                "{url}"
            );

            // A link to a version (`/docs?version=vN`) opens on it, the
            // menu showing it.
            browser.open(&format!("{docs}?version={version}")).await;
            browser
                .expect_operations(&format!("{version}_opened_directly"), &own)
                .await;
            let picked = browser
                .run("return document.getElementById('version').value;")
                .await;
            assert_eq!(picked, path.as_str());
            browser.open(&docs).await;
            browser
                .expect_operations("whole_api_reopened", &operations_of(&whole))
                .await;
        }

        // And back from a version to the whole API.
        let last = versions.last().unwrap();
        browser.pick(&format!("/{last}/openapi.json")).await;
        browser
            .expect_operations(
                &format!("{last}_again"),
                &operations_of(&document(&proxied, &format!("/{last}/openapi.json")).await),
            )
            .await;
        browser.pick("/openapi.json").await;
        browser
            .expect_operations("whole_api_again", &operations_of(&whole))
            .await;
        let url = browser.client.current_url().await.unwrap();
        assert_eq!(url.query(), None, "{url}");
        browser.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_deprecated_version_is_labelled_in_the_menu_and_its_operations_shown_deprecated() {
    let proxied = behind_nginx(spawn_app_with_policy(DEPRECATE_V1).await, &[]);
    let whole = document(&proxied, "/openapi.json").await;
    let v1 = operations_of(&document(&proxied, "/v1/openapi.json").await);
    assert!(
        !v1.is_empty() && v1.iter().all(|op| op.deprecated),
        "{v1:#?}"
    );

    bounded(async {
        let browser = Browser::start().await;
        browser.open(&proxied.app.url("/docs")).await;
        let expected = operations_of(&whole);
        browser
            .expect_operations("deprecated_whole_api", &expected)
            .await;
        // Shown deprecated exactly where the document says so: v1's.
        for op in &expected {
            assert_eq!(op.deprecated, op.path.starts_with("/v1/"), "{op:?}");
        }
        let menu = browser.menu().await;
        let label = |value: &str| {
            menu.iter()
                .find(|(v, _)| v == value)
                .map(|(_, label)| label.clone())
        };
        assert_eq!(
            label("/v1/openapi.json").as_deref(),
            Some("v1 (deprecated)")
        );
        assert_eq!(label("/v2/openapi.json").as_deref(), Some("v2"));

        browser.pick("/v1/openapi.json").await;
        browser.expect_operations("deprecated_v1", &v1).await;
        browser.close().await;
    })
    .await;
}

#[tokio::test]
async fn with_docs_off_the_docs_page_is_not_served_through_nginx() {
    let proxied = behind_nginx(
        spawn_app_with(&Servers::shared(), &["--docs=off"]).await,
        &[],
    );
    for path in ["/docs", "/openapi.json", "/v1/openapi.json"] {
        assert_eq!(proxied.app.get(path).await.status(), 404, "{path}");
    }

    bounded(async {
        let browser = Browser::start().await;
        browser.open(&proxied.app.url("/docs")).await;
        browser.shot("docs_off").await;
        assert_eq!(navigation_status(&browser).await, 404);
        let ui = browser
            .run("return document.getElementById('ui') !== null;")
            .await;
        assert_eq!(ui, false, "no Swagger UI");
        browser.close().await;
    })
    .await;
}
