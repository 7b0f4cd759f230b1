//! The deployment files, checked for real without a Docker engine: the
//! compose files by the Compose v2 CLI, the Dockerfile by hadolint and by
//! what it must hold, the workflow against GitHub's schema, nginx.conf by
//! nginx, and the env files against the settings the service has.
//!
//! The checkers come from scripts/deploy-tools.sh, which the test command
//! runs and names in `DEPLOY_TOOLS`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ipnet::IpNet;
use serde_json::Value;

use crate::cli::{cli_in, text};
use crate::helpers::repo_root;
use crate::proxy::env_file;

pub fn tool(name: &str) -> PathBuf {
    let Ok(dir) = std::env::var("DEPLOY_TOOLS") else {
        panic!("DEPLOY_TOOLS is not set: run the tests with `make test` (scripts/test.sh), which installs the checkers")
    };
    PathBuf::from(dir).join(name)
}

/// Runs `command` in the repository; its output, or a failure showing it.
pub fn run(command: &mut Command) -> Output {
    let output = command.current_dir(repo_root()).output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// The files of each stack, as the Makefile passes them: prod's monitoring
/// profile lives in a file of its own, since a Swarm stack file (the prod
/// file is one) may have no profiles.
const DEV: &[&str] = &["compose.yaml"];
const PROD: &[&str] = &["compose.prod.yaml", "compose.prod.single-host.yaml"];

/// The stack as Compose itself resolves it, with its env file.
fn compose_config(files: &[&str], env: &str) -> Value {
    compose_profile(files, env, None)
}

/// As [`compose_config`], with the optional services of `profile` too.
fn compose_profile(files: &[&str], env: &str, profile: Option<&str>) -> Value {
    let mut command = Command::new(tool("docker-compose"));
    for file in files {
        command.args(["-f", file]);
    }
    command.args(["--env-file", env]);
    if let Some(profile) = profile {
        command.args(["--profile", profile]);
    }
    let output = run(command
        .args(["config", "--format", "json"])
        .env_remove("PROD_ENV_FILE")
        .env_remove("COMPOSE_PROFILES"));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_optional_profiles_add_monitoring_to_prod_and_a_database_ui_to_dev() {
    let prod = compose_profile(PROD, ".env.prod", Some("monitoring"));
    let monitoring = services(&prod);
    for name in ["prometheus", "grafana", "jaeger"] {
        assert_eq!(monitoring[name]["profiles"][0], "monitoring", "{name}");
        assert!(monitoring[name]["healthcheck"]["test"].is_array(), "{name}");
    }
    // Grafana on the server's loopback only; Prometheus not published.
    let grafana_ports = monitoring["grafana"]["ports"].as_array().unwrap();
    assert!(grafana_ports.iter().all(|p| p["host_ip"] == "127.0.0.1"));
    // Jaeger's UI likewise; it takes the service's traces on edge, where
    // the API is, and its image is a parameter like the others.
    let jaeger_ports = monitoring["jaeger"]["ports"].as_array().unwrap();
    assert!(jaeger_ports.iter().all(|p| p["host_ip"] == "127.0.0.1"));
    assert!(monitoring["jaeger"]["networks"]
        .as_object()
        .unwrap()
        .contains_key("edge"));
    let compose =
        std::fs::read_to_string(repo_root().join("compose.prod.single-host.yaml")).unwrap();
    assert!(
        compose.contains("image: ${JAEGER_IMAGE:-"),
        "the image is no parameter"
    );
    assert!(monitoring["prometheus"]["ports"].is_null());
    let mounts = monitoring["grafana"]["volumes"].to_string();
    assert!(mounts.contains("monitoring/grafana/dashboards"), "{mounts}");
    // Without the profile, neither runs.
    let plain = compose_config(PROD, ".env.prod");
    assert!(!services(&plain).contains_key("prometheus"));

    let dev = compose_profile(DEV, ".env", Some("admin"));
    let pgadmin = &services(&dev)["pgadmin"];
    let ports = pgadmin["ports"].as_array().unwrap();
    assert!(
        ports.iter().all(|p| p["host_ip"] == "127.0.0.1"),
        "{ports:?}"
    );
    let servers = repo_root().join("pgadmin/servers.json");
    let servers: Value = serde_json::from_str(&std::fs::read_to_string(servers).unwrap()).unwrap();
    assert_eq!(servers["Servers"]["1"]["Host"], "db");
}

fn services(config: &Value) -> &serde_json::Map<String, Value> {
    config["services"].as_object().unwrap()
}

fn published(config: &Value) -> BTreeSet<String> {
    services(config)
        .iter()
        .filter(|(_, service)| service["ports"].as_array().is_some_and(|p| !p.is_empty()))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn the_dev_stack_waits_for_healthy_dependencies_and_mounts_the_source() {
    let config = compose_config(DEV, ".env");
    let services = services(&config);

    for (name, service) in services {
        assert!(
            service["healthcheck"]["test"].is_array(),
            "{name} has no healthcheck"
        );
    }
    for dependency in services["api"]["depends_on"].as_object().unwrap().values() {
        assert_eq!(dependency["condition"], "service_healthy");
    }
    assert_eq!(
        services["nginx"]["depends_on"]["api"]["condition"],
        "service_healthy"
    );
    assert_eq!(services["api"]["build"]["target"], "dev");
    let api_volumes = services["api"]["volumes"].as_array().unwrap();
    assert!(
        api_volumes
            .iter()
            .any(|v| v["type"] == "bind" && v["target"] == "/src"),
        "the source is not mounted: {api_volumes:?}"
    );
    // The database is published for psql on the host, on loopback only.
    for port in services["db"]["ports"].as_array().into_iter().flatten() {
        assert_eq!(port["host_ip"], "127.0.0.1", "{port}");
    }
    assert!(published(&config).contains("nginx"));
    assert_eq!(services["api"]["environment"]["ENVIRONMENT"], "development");
    assert_eq!(services["api"]["environment"]["MIGRATE_ON_START"], "true");
    assert_no_initdb_hook(&services["db"]);
}

#[test]
fn the_prod_stack_publishes_only_nginx_and_keeps_data_and_secrets_in_place() {
    let config = compose_config(PROD, ".env.prod");
    let services = services(&config);

    assert_eq!(published(&config), BTreeSet::from(["nginx".to_owned()]));
    // The Swarm stack is compose.prod.yaml alone: nginx publishes there too,
    // and nothing else (the loopback-only UIs are compose-only).
    let stack = compose_config(&["compose.prod.yaml"], ".env.prod");
    assert_eq!(published(&stack), BTreeSet::from(["nginx".to_owned()]));
    for (name, service) in services {
        assert!(
            service["healthcheck"]["test"].is_array(),
            "{name}: no healthcheck"
        );
        assert_eq!(
            service["restart"], "unless-stopped",
            "{name}: restart policy"
        );
        assert!(
            service["deploy"]["resources"]["limits"]["memory"].is_string(),
            "{name}: no memory limit"
        );
        let mut volumes = service["volumes"].as_array().into_iter().flatten();
        assert!(
            !volumes.any(|v| v["type"] == "bind"),
            "{name} mounts files from the host"
        );
    }
    let api = &services["api"];
    assert!(api["image"].is_string() && api["build"]["target"] == "runtime");
    assert!(
        api["deploy"]["replicas"].is_number(),
        "no replicas for a Swarm"
    );
    assert_eq!(api["deploy"]["update_config"]["order"], "start-first");
    assert_eq!(api["environment"]["ENVIRONMENT"], "production");
    assert!(api["environment"]["WORKERS"].is_string());
    // The schema reaches the database through the service, which applies
    // its migrations before it listens: never through PostgreSQL's initdb
    // hook, which only ever sees an empty volume.
    assert_eq!(api["environment"]["MIGRATE_ON_START"], "true");
    assert_no_initdb_hook(&services["db"]);
    // The documents list every operation, the admins' too: not in production.
    assert_eq!(api["environment"]["DOCS"], "off");

    // Data on named volumes; the databases on the internal network only.
    let db_volumes = services["db"]["volumes"].as_array().unwrap();
    assert!(db_volumes
        .iter()
        .any(|v| v["type"] == "volume" && v["target"] == "/var/lib/postgresql/data"));
    let networks = config["networks"].as_object().unwrap();
    let stores = services
        .iter()
        .filter(|(name, _)| !["api", "nginx"].contains(&name.as_str()));
    for (store, service) in stores {
        for network in service["networks"].as_object().unwrap().keys() {
            assert_eq!(networks[network]["internal"], true, "{store} on {network}");
        }
    }
}

/// The API believes X-Real-IP from nginx alone: in each stack nginx has a
/// fixed address on a network it shares with the API, outside the range
/// the other containers' addresses come from (so none can take it first),
/// and the API's TRUSTED_PROXIES is exactly that address.
#[test]
fn each_stack_trusts_exactly_nginxs_fixed_address() {
    for (files, env) in [(DEV, ".env"), (PROD, ".env.prod")] {
        let file = files[0];
        let config = compose_config(files, env);
        let services = services(&config);
        let nginx = services["nginx"]["networks"].as_object().unwrap();
        let fixed: Vec<(&String, IpAddr)> = nginx
            .iter()
            .filter_map(|(network, attached)| {
                let address = attached["ipv4_address"].as_str()?;
                Some((network, address.parse().unwrap()))
            })
            .collect();
        let [(network, address)] = fixed[..] else {
            panic!("{file}: nginx has not one fixed address: {nginx:?}");
        };
        let api = services["api"]["networks"].as_object().unwrap();
        assert!(
            api.contains_key(network),
            "{file}: the API is not on {network}"
        );
        let ipam = &config["networks"][network]["ipam"]["config"][0];
        let net = |key: &str| -> IpNet { ipam[key].as_str().unwrap().parse().unwrap() };
        assert!(net("subnet").contains(&address), "{file}: {ipam}");
        assert!(!net("ip_range").contains(&address), "{file}: {ipam}");
        assert_eq!(
            services["api"]["environment"]["TRUSTED_PROXIES"],
            format!("{address}/32"),
            "{file}"
        );
    }
}

fn assert_no_initdb_hook(db: &Value) {
    let mounts = db["volumes"]
        .as_array()
        .into_iter()
        .chain(db["configs"].as_array())
        .flatten();
    for mount in mounts {
        let target = mount["target"].as_str().unwrap_or_default();
        assert!(
            !target.starts_with("/docker-entrypoint-initdb.d"),
            "the database is handed a schema of its own: {mount}"
        );
    }
}

/// Dockerfile instructions as (stage, instruction, arguments), continuation
/// lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String, String)> {
    let source = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let joined = source.replace("\\\n", " ");
    let mut stage = String::new();
    let mut instructions = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, arguments) = line.split_once(' ').unwrap_or((line, ""));
        let instruction = instruction.to_uppercase();
        if instruction == "FROM" {
            stage = arguments.rsplit(' ').next().unwrap().to_owned();
        }
        instructions.push((stage.clone(), instruction, arguments.trim().to_owned()));
    }
    instructions
}

#[test]
fn the_dockerfile_builds_in_stages_and_ships_a_small_non_root_image() {
    let instructions = dockerfile();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(_, instruction, _)| instruction == "FROM")
        .map(|(stage, _, _)| stage.as_str())
        .collect();
    assert_eq!(
        stages,
        ["chef", "planner", "builder", "dev", "proxy", "runtime"]
    );
    let runtime: Vec<_> = instructions
        .iter()
        .filter(|(s, _, _)| s == "runtime")
        .collect();
    let has = |wanted: &str| {
        runtime
            .iter()
            .any(|(_, instruction, _)| instruction == wanted)
    };

    // Every base image is a build argument (a registry mirror's copy, or a
    // test's stand-in, goes there), the official image by default; the
    // runtime's is a slim one. No `# syntax=` line, which would make
    // BuildKit fetch a frontend image before anything is built.
    let source = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(
        !source.lines().any(|line| line.starts_with("# syntax=")),
        "a frontend to fetch"
    );
    // The default of a global `ARG name=...`.
    let default_of = |name: &str| {
        instructions.iter().find_map(|(s, i, a)| {
            (s.is_empty() && i == "ARG")
                .then(|| a.strip_prefix(&format!("{name}=")))
                .flatten()
        })
    };
    for (stage, _, arguments) in instructions.iter().filter(|(_, i, _)| i == "FROM") {
        let base = arguments.split_whitespace().next().unwrap();
        if stages.contains(&base) {
            continue;
        }
        let argument = base
            .strip_prefix("${")
            .and_then(|b| b.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{stage}: FROM {base} is no build argument"));
        assert!(
            default_of(argument).is_some(),
            "{stage}: {argument} has no default"
        );
    }
    let runtime_base = runtime[0].2.split_whitespace().next().unwrap();
    let default = default_of(runtime_base.trim_start_matches("${").trim_end_matches('}')).unwrap();
    assert!(default.contains("-slim"), "runtime base: {default}");
    let user = runtime
        .iter()
        .rfind(|(_, i, _)| i == "USER")
        .map(|(_, _, a)| a.as_str());
    assert!(
        user.is_some_and(|u| !u.starts_with("root") && !u.starts_with("0")),
        "the image runs as {user:?}"
    );
    assert!(has("HEALTHCHECK") && has("ENTRYPOINT"));
    let healthcheck = &runtime
        .iter()
        .find(|(_, i, _)| i == "HEALTHCHECK")
        .unwrap()
        .2;
    assert!(healthcheck.contains("\"healthcheck\""), "{healthcheck}");

    // Dependencies are cooked from the recipe before the source arrives.
    let builder: Vec<_> = instructions
        .iter()
        .filter(|(s, _, _)| s == "builder")
        .collect();
    let cook = builder
        .iter()
        .position(|(_, _, a)| a.contains("cargo chef cook"));
    let source = builder
        .iter()
        .position(|(_, i, a)| i == "COPY" && a == ". .");
    assert!(
        cook.is_some() && cook < source,
        "no cached dependency layer"
    );
}

#[test]
fn everything_the_dockerfile_copies_exists_and_reaches_the_build() {
    let ignored: Vec<String> = std::fs::read_to_string(repo_root().join(".dockerignore"))
        .unwrap()
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_end_matches('/').to_owned())
        .collect();
    let copies = dockerfile()
        .into_iter()
        .filter(|(_, i, a)| i == "COPY" && !a.starts_with("--from"));
    let mut checked = 0;
    for (stage, _, arguments) in copies {
        let words: Vec<&str> = arguments
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for source in &words[..words.len() - 1] {
            let path = repo_root().join(source);
            assert!(path.exists(), "{stage}: COPY {source}: no such file");
            assert!(
                !ignored.iter().any(|pattern| pattern == source),
                "{stage}: COPY {source}: excluded by .dockerignore"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} sources checked");
    for secret in [".env", ".env.*", "target", ".git"] {
        assert!(
            ignored.iter().any(|p| p == secret),
            "{secret} is sent to the build"
        );
    }
}

#[test]
fn hadolint_passes_the_dockerfile() {
    run(Command::new(tool("hadolint")).args(["--no-color", "Dockerfile"]));
}

#[test]
fn the_workflows_are_valid_for_github_actions() {
    run(Command::new(tool("check-jsonschema")).args([
        "--builtin-schema",
        "vendor.github-workflows",
        ".github/workflows/docker.yml",
        ".github/workflows/api-compat.yml",
    ]));
}

#[test]
fn nginx_accepts_its_configuration_filled_in_from_every_env_file() {
    for name in [".env", ".env.local", ".env.prod"] {
        let mut env: HashMap<String, String> = env_file(name);
        // Compose's service names do not resolve here, and nginx -t looks
        // up its upstreams. Without Docker the upstream is BIND's port.
        env.insert("API_HOST".into(), "127.0.0.1".into());
        if !env.contains_key("API_PORT") {
            let port = env["BIND"].rsplit(':').next().unwrap().to_owned();
            env.insert("API_PORT".into(), port);
        }
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(repo_root().join("scripts/nginx.sh"))
            .arg("check")
            .arg(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}: {}", text(&output.stderr));
        let rendered = std::fs::read_to_string(dir.path().join("nginx.conf")).unwrap();
        let workers: usize = env["WORKERS"].parse().unwrap();
        assert_eq!(
            rendered.matches("server 127.0.0.1:").count(),
            workers + 1,
            "{name}: one upstream per worker and the shared port as backup"
        );
    }
}

fn names(settings: &str) -> BTreeSet<String> {
    settings
        .lines()
        .map(|line| line.trim_start_matches("# "))
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn every_setting_is_described_in_dot_env_and_the_others_set_no_unknown_names() {
    let dot_env = std::fs::read_to_string(repo_root().join(".env")).unwrap();
    let described = names(&dot_env);

    let checked = cli_in(
        &repo_root(),
        &["--env-file", ".env", "config", "check"],
        &[],
        "",
    );
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let mut settings = names(&text(&checked.stdout));
    settings.extend(["LOG_FORMAT".to_owned(), "RUST_LOG".to_owned()]);
    let undescribed: Vec<_> = settings.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "not described in .env: {undescribed:?}"
    );

    for other in [".env.local", ".env.prod"] {
        let text = std::fs::read_to_string(repo_root().join(other)).unwrap();
        let unknown: Vec<_> = names(&text).difference(&described).cloned().collect();
        assert!(
            unknown.is_empty(),
            "{other} sets names .env does not describe: {unknown:?}"
        );
    }
}

#[test]
fn production_refuses_the_placeholders_of_dot_env_prod() {
    let as_shipped = &["--env-file", ".env.prod", "config", "check"];
    let refused = cli_in(&repo_root(), as_shipped, &[], "");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("CHANGE_ME"),
        "{}",
        text(&refused.stderr)
    );
    // The master checks them in a child before it starts a worker; serve
    // exits as a bad command line does.
    let serve = cli_in(&repo_root(), &["--env-file", ".env.prod", "serve"], &[], "");
    assert_eq!(serve.status.code(), Some(2), "{}", text(&serve.stderr));
    assert!(
        text(&serve.stderr).contains("CHANGE_ME"),
        "{}",
        text(&serve.stderr)
    );

    // Filled in, as a deployment does it, the same file passes.
    let prod = std::fs::read_to_string(repo_root().join(".env.prod")).unwrap();
    let filled = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        filled.path(),
        prod.replace("CHANGE_ME", "s3cret-from-the-vault"),
    )
    .unwrap();
    let path = filled.path().display().to_string();
    let accepted = cli_in(
        &repo_root(),
        &["--env-file", &path, "config", "check"],
        &[],
        "",
    );
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    assert!(text(&accepted.stdout).contains("ENVIRONMENT=production"));
}

/// Every Rust file under `dir`, its subfolders' (feature modules') too.
fn rust_sources(dir: &Path) -> String {
    let mut sources = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources.push_str(&rust_sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            sources.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    sources
}

#[test]
fn the_security_document_names_only_tests_that_exist() {
    let document = std::fs::read_to_string(repo_root().join("docs/security.md")).unwrap();
    let sources: String = ["api/tests/api", "api/src"]
        .iter()
        .map(|dir| rust_sources(&repo_root().join(dir)))
        .collect();
    let mut named = 0;
    for reference in document.split('`').skip(1).step_by(2) {
        let Some((_, name)) = reference.rsplit_once("::") else {
            continue;
        };
        if name == "*"
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        assert!(
            sources.contains(&format!("fn {name}(")),
            "docs/security.md names `{reference}`, which does not exist"
        );
        named += 1;
    }
    assert!(named >= 10, "only {named} tests named");
}

/// A container's health is liveness: the API's healthcheck asks /healthz
/// (a Redis blip must not restart every replica; readiness decides traffic,
/// not restarts), and nginx's asks nginx itself, never through the API, in
/// both stacks and in the image.
#[test]
fn container_healthchecks_ask_liveness_and_nginx_checks_itself() {
    let words = |test: &Value| -> Vec<String> {
        test.as_array()
            .unwrap()
            .iter()
            .map(|word| word.as_str().unwrap().to_owned())
            .collect()
    };
    for (files, env) in [(DEV, ".env"), (PROD, ".env.prod")] {
        let file = files[0];
        let config = compose_config(files, env);
        let services = services(&config);
        let api = words(&services["api"]["healthcheck"]["test"]);
        assert!(
            api.last().is_some_and(|word| word == "healthcheck"),
            "{file}: the API's healthcheck is {api:?}"
        );
        assert!(
            !api.iter().any(|word| word.contains("ready")),
            "{file}: {api:?}"
        );
        let nginx = words(&services["nginx"]["healthcheck"]["test"]);
        assert_eq!(
            nginx.last().map(String::as_str),
            Some("http://127.0.0.1/nginx-health"),
            "{file}: nginx's healthcheck is {nginx:?}"
        );
    }
    let image = dockerfile();
    let healthcheck = &image
        .iter()
        .rfind(|(_, instruction, _)| instruction == "HEALTHCHECK")
        .unwrap()
        .2;
    assert!(healthcheck.ends_with("\"healthcheck\"]"), "{healthcheck}");
}
