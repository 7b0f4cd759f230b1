//! API versions: one OpenAPI document each, committed and kept equal to what
//! is served, deprecation headers, and the breaking-change check.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::cli::text;
use crate::helpers::{
    repo_root, spawn_app, spawn_app_with, spawn_app_with_policy, Servers, TestApp,
};

/// The committed documents: file name and text. A document's `.liquid`
/// twin beside it is the template's source for it, not a document.
fn committed() -> Vec<(String, String)> {
    let dir = repo_root().join("openapi");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}; run `make openapi`", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let twin_of = path.to_str().and_then(|p| p.strip_suffix(".liquid"));
            !twin_of.is_some_and(|document| Path::new(document).is_file())
        })
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Where the service serves the document committed as `file`.
fn served_at(file: &str) -> String {
    match file {
        "openapi.json" => "/openapi.json".to_owned(),
        version => format!("/{}/openapi.json", version.trim_end_matches(".json")),
    }
}

async fn document(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn paths(document: &Value) -> BTreeSet<String> {
    document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_served_documents_are_the_committed_ones() {
    let app = spawn_app().await;
    let files = committed();
    let combined = document(&app, "/openapi.json").await;
    let versions: BTreeSet<String> = paths(&combined)
        .iter()
        .filter_map(|path| app::versions::version_of(path).map(str::to_owned))
        .collect();
    let mut expected: Vec<String> = versions.iter().map(|v| format!("{v}.json")).collect();
    expected.push("openapi.json".into());
    expected.sort();
    let names: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        names, expected,
        "openapi/ does not hold one document per served version; run `make openapi`"
    );

    for (file, text) in files {
        let served = app.get(&served_at(&file)).await.text().await.unwrap();
        assert!(
            served == text,
            "openapi/{file} is not what the service serves at {}: run `make openapi` and review the diff",
            served_at(&file)
        );
    }
}

#[tokio::test]
async fn each_version_has_a_document_of_only_its_own_paths() {
    let app = spawn_app().await;
    let combined = paths(&document(&app, "/openapi.json").await);
    let mut versioned = BTreeSet::new();
    let versions = app::openapi::versions_in(&document(&app, "/openapi.json").await);
    assert!(versions.len() >= 2, "{versions:?}");
    for version in &versions {
        let document = document(&app, &format!("/{version}/openapi.json")).await;
        assert_eq!(document["info"]["version"], version.as_str());
        let own = paths(&document);
        let prefix = format!("/{version}/");
        assert!(!own.is_empty());
        assert!(
            own.iter().all(|path| path.starts_with(&prefix)),
            "{version}: {own:?}"
        );
        let expected: BTreeSet<String> = combined
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect();
        assert_eq!(own, expected, "{version} leaves out some of its paths");
        versioned.extend(own);
    }
    // The rest, such as /healthz, belongs to no version.
    assert!(combined
        .difference(&versioned)
        .all(|path| !path.starts_with("/v")));
    assert!(combined.contains("/healthz"));
}

#[tokio::test]
async fn the_docs_page_switches_between_the_documents() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("<select id=\"version\">"));
    for (file, _) in committed() {
        let url = served_at(&file);
        assert!(
            page.contains(&format!("<option value=\"{url}\"")),
            "no menu entry for {url}"
        );
        assert!(document(&app, &url).await["openapi"].is_string());
    }
}

/// A versions policy with v1 deprecated (docs_page.rs shows it in a browser).
pub const DEPRECATE_V1: &str = "[v1]\ndeprecated = 2026-11-01\nsunset = 2027-05-01\n";

#[tokio::test]
async fn a_deprecated_version_answers_with_deprecation_sunset_and_successor() {
    let app = spawn_app_with_policy(DEPRECATE_V1).await;
    for path in ["/v1/hello", "/v1/no-such-thing"] {
        let response = app.get(path).await;
        let headers = response.headers();
        // RFC 9745: a structured-field date, 2026-11-01T00:00:00Z.
        assert_eq!(headers["deprecation"], "@1793491200", "{path}");
        // RFC 8594: an HTTP date.
        assert_eq!(headers["sunset"], "Sat, 01 May 2027 00:00:00 GMT", "{path}");
        assert_eq!(
            headers["link"], "</v2/openapi.json>; rel=\"successor-version\"",
            "{path}"
        );
    }
    let current = app.get("/v2/hello").await;
    assert_eq!(current.status(), 200);
    assert!(current.headers().get("deprecation").is_none());
    assert!(app.get("/healthz").await.headers().get("sunset").is_none());
}

#[tokio::test]
async fn a_deprecated_versions_operations_are_flagged_in_every_document() {
    let app = spawn_app_with_policy(DEPRECATE_V1).await;
    let v1 = document(&app, "/v1/openapi.json").await;
    assert_eq!(v1["paths"]["/v1/hello"]["get"]["deprecated"], true);
    assert!(v1["info"]["description"]
        .as_str()
        .unwrap()
        .contains("**Deprecated** since 2026-11-01"));
    let combined = document(&app, "/openapi.json").await;
    assert_eq!(combined["paths"]["/v1/hello"]["get"]["deprecated"], true);
    assert_ne!(combined["paths"]["/v2/hello"]["get"]["deprecated"], true);
    let docs = app.get("/docs").await.text().await.unwrap();
    assert!(docs.contains(">v1 (deprecated)</option>"));
}

/// A git repository holding a copy of the committed documents and the
/// check's script, to change and check against its first commit.
struct Repository {
    dir: tempfile::TempDir,
}

impl Repository {
    fn new() -> Repository {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("scripts")).unwrap();
        fs::create_dir_all(root.join("openapi")).unwrap();
        let script = root.join("scripts/api-compat.sh");
        fs::copy(repo_root().join("scripts/api-compat.sh"), &script).unwrap();
        for (file, text) in committed() {
            fs::write(root.join("openapi").join(file), text).unwrap();
        }
        let repository = Repository { dir };
        repository.git(&["init", "--quiet", "--initial-branch=main"]);
        repository.git(&["add", "."]);
        repository.git(&["commit", "--quiet", "-m", "documents as committed"]);
        repository
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join("openapi").join(file)
    }

    fn edit(&self, file: &str, change: impl FnOnce(&mut Value)) {
        let mut document: Value =
            serde_json::from_str(&fs::read_to_string(self.path(file)).unwrap()).unwrap();
        change(&mut document);
        fs::write(
            self.path(file),
            serde_json::to_string_pretty(&document).unwrap(),
        )
        .unwrap();
    }

    fn check(&self) -> Output {
        Command::new(self.dir.path().join("scripts/api-compat.sh"))
            .arg("main")
            .env(
                "API_BIN",
                env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))),
            )
            .current_dir(Path::new("/"))
            .output()
            .unwrap()
    }
}

/// A response field gone: v2's hello no longer says its version.
fn drop_hello_version(document: &mut Value) {
    let hello = &mut document["components"]["schemas"]["HelloV2"];
    hello["properties"]
        .as_object_mut()
        .unwrap()
        .remove("version");
}

fn passes(out: &Output) -> bool {
    out.status.success()
}

#[test]
fn unchanged_documents_pass_the_breaking_change_check() {
    let repository = Repository::new();
    let out = repository.check();
    assert!(passes(&out), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("no breaking changes"));
}

#[test]
fn a_removed_response_field_in_an_existing_version_fails_the_check() {
    let repository = Repository::new();
    repository.edit("v2.json", drop_hello_version);
    let out = repository.check();
    assert!(!passes(&out));
    let report = text(&out.stdout);
    assert!(
        report.contains(
            "v2: GET /v2/hello 200 application/json; charset=utf-8: version: the field was removed"
        ),
        "{report}"
    );
    assert!(report.contains("1 breaking change(s)"), "{report}");
}

#[test]
fn a_changed_type_in_the_unversioned_paths_fails_the_check() {
    let repository = Repository::new();
    repository.edit("openapi.json", |doc| {
        doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]
            ["application/json; charset=utf-8"]["schema"] = serde_json::json!({ "type": "string" });
    });
    let out = repository.check();
    assert!(!passes(&out));
    assert!(
        text(&out.stdout).contains("unversioned: GET /healthz 200"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn breaking_changes_in_a_new_version_pass_the_check() {
    let repository = Repository::new();
    // A version after the last is v2 with a field gone: new, so free to
    // differ.
    let newest = committed()
        .iter()
        .filter_map(|(file, _)| app::versions::number(file.trim_end_matches(".json")))
        .max()
        .unwrap();
    let next = format!("v{}.json", newest + 1);
    fs::copy(repository.path("v2.json"), repository.path(&next)).unwrap();
    repository.edit(&next, drop_hello_version);
    let out = repository.check();
    assert!(passes(&out), "{}", text(&out.stdout));
    let new = format!("{}: new", next.trim_end_matches(".json"));
    assert!(text(&out.stdout).contains(&new));
}

#[test]
fn removing_a_version_needs_it_deprecated_first() {
    let repository = Repository::new();
    fs::remove_file(repository.path("v1.json")).unwrap();
    let out = repository.check();
    assert!(!passes(&out));
    assert!(text(&out.stdout).contains("v1: removed without being deprecated first"));

    // Deprecated at the base, it may go.
    fs::copy(
        repo_root().join("openapi/v1.json"),
        repository.path("v1.json"),
    )
    .unwrap();
    repository.edit("v1.json", |doc| {
        doc["paths"]["/v1/hello"]["get"]["deprecated"] = true.into();
    });
    repository.git(&["commit", "--quiet", "-am", "deprecate v1"]);
    fs::remove_file(repository.path("v1.json")).unwrap();
    let out = repository.check();
    assert!(passes(&out), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("v1: removed, after being deprecated"));
}

#[tokio::test]
async fn with_docs_off_neither_the_documents_nor_the_docs_page_are_served() {
    let app = spawn_app_with(&Servers::shared(), &["--docs=off"]).await;
    let mut hidden = vec![
        "/docs".to_owned(),
        "/docs/".to_owned(),
        "/openapi.json".to_owned(),
    ];
    for (file, _) in committed() {
        hidden.push(served_at(&file));
    }
    for path in hidden {
        assert_eq!(app.get(&path).await.status(), 404, "{path} is served");
    }
    // The API itself is.
    assert_eq!(app.get("/v1/hello").await.status(), 200);
}
