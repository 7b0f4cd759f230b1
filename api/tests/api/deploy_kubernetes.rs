//! The Kubernetes manifests (deploy/kubernetes), checked offline: each
//! overlay rendered by `kubectl kustomize`, validated by kubernetes-validate
//! against the oldest and the newest Kubernetes they claim, the custom
//! resources against the schemas vendored from their projects' CRDs
//! (deploy/kubernetes/schemas), checkov's policies with the listed skips,
//! and what neither can see: probes, the drain, the worker settings, the
//! network policies' selectors, the connection budget, TLS to PostgreSQL,
//! where the secrets live and where the project's name does.
//!
//! The renders use each overlay's secrets.env.example, never a secrets.env a
//! developer keeps beside it. The checkers come from scripts/deploy-tools.sh
//! (`DEPLOY_TOOLS`), as for deploy.rs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::cli::text;
use crate::deploy::{run, tool};
use crate::helpers::repo_root;
use crate::proxy::env_file;

/// The versions the manifests are checked against: 1.30 is the first whose
/// API server takes a preStop `sleep` action by default.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Custom resources and the schema of each, vendored by
/// scripts/k8s-crd-schemas.py.
const CUSTOM_KINDS: [(&str, &str); 4] = [
    ("HTTPRoute", "httproute-gateway-v1.json"),
    ("Cluster", "cluster-postgresql-v1.json"),
    ("Pooler", "pooler-postgresql-v1.json"),
    ("ServiceMonitor", "servicemonitor-monitoring-v1.json"),
];

struct Render {
    overlay: &'static str,
    file: PathBuf,
    docs: Vec<Value>,
}

/// The overlays as `kubectl apply -k` would send them, and prod with the
/// PgBouncer component added (no shipped overlay uses it), rendered once
/// per test run.
fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(|| {
        // A directory per test process (renders of other projects may share
        // the target directory); those of processes gone are removed.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(tmp).into_iter().flatten() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("kubernetes-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        let scratch = tmp.join(format!("kubernetes-{}", std::process::id()));
        let tree = scratch.join("tree");
        copy_tree(&repo_root().join("deploy/kubernetes"), &tree);
        let pooler = tree.join("overlays/prod-pooler");
        std::fs::create_dir_all(&pooler).unwrap();
        std::fs::write(
            pooler.join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [../prod]\ncomponents: [../../components/pgbouncer]\n",
        )
        .unwrap();
        ["dev", "prod", "prod-pooler"]
            .into_iter()
            .map(|overlay| {
                let output = run(Command::new(tool("kubectl"))
                    .arg("kustomize")
                    .arg(tree.join("overlays").join(overlay)));
                let file = scratch.join(format!("{overlay}.yaml"));
                std::fs::write(&file, &output.stdout).unwrap();
                let json = run(Command::new(tool("python")).arg("-c").arg(
                    "import json, sys, yaml\n\
                     json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
                ).arg(&file));
                let docs = serde_json::from_slice(&json.stdout).unwrap();
                Render {
                    overlay,
                    file,
                    docs,
                }
            })
            .collect()
    })
}

/// `from` copied to `to`, each overlay's secrets.env made from its example
/// (a real one beside it is left out).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else if name == "secrets.env.example" {
            std::fs::copy(&path, to.join("secrets.env")).unwrap();
        } else if name != "secrets.env" {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn render(overlay: &str) -> &'static Render {
    renders().iter().find(|r| r.overlay == overlay).unwrap()
}

impl Render {
    fn find(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.overlay))
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs.iter().filter(move |d| d["kind"] == kind)
    }

    /// A generated ConfigMap, by the name it had before its hash suffix.
    fn config_map(&self, name: &str) -> HashMap<String, String> {
        let prefix = format!("{name}-");
        let map = self
            .of_kind("ConfigMap")
            .find(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.overlay));
        map["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    fn web(&self) -> &Value {
        &self.find("Deployment", "web")["spec"]["template"]
    }

    fn container<'a>(&self, pod: &'a Value, name: &str) -> &'a Value {
        pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{}: no container {name}", self.overlay))
    }

    /// Every pod template: Deployments', StatefulSets' and Jobs'.
    fn pod_templates(&self) -> Vec<(String, &Value)> {
        self.docs
            .iter()
            .filter(|d| ["Deployment", "StatefulSet", "Job"].contains(&d["kind"].as_str().unwrap()))
            .map(|d| {
                (
                    format!(
                        "{} {}",
                        d["kind"].as_str().unwrap(),
                        d["metadata"]["name"].as_str().unwrap()
                    ),
                    &d["spec"]["template"],
                )
            })
            .collect()
    }
}

fn number(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| value.as_str().and_then(|s| s.parse().ok()).unwrap())
}

#[test]
fn kubernetes_overlays_validate_against_the_oldest_and_newest_versions_claimed() {
    let custom: BTreeMap<_, _> = CUSTOM_KINDS.into_iter().collect();
    let mut instances: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for render in renders() {
        for version in KUBERNETES_VERSIONS {
            let output = Command::new(tool("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", version])
                .arg(&render.file)
                .output()
                .unwrap();
            let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
            assert!(
                output.status.success(),
                "{} on {version}:\n{said}",
                render.overlay
            );
            // No schema is a failure, but for the custom resources (below).
            for line in said.lines().filter(|l| l.contains("Couldn't find schema")) {
                let kind = line
                    .split("for kind ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap();
                assert!(
                    custom.contains_key(kind),
                    "{} on {version}: no schema for a built-in kind: {line}",
                    render.overlay
                );
            }
            assert!(
                !said.contains("ERROR"),
                "{} on {version}:\n{said}",
                render.overlay
            );
        }
        // The custom resources, against their projects' own schemas.
        let dir = render.file.with_extension("custom");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, doc) in render.docs.iter().enumerate() {
            let kind = doc["kind"].as_str().unwrap();
            if let Some(schema) = custom.get(kind) {
                let instance = dir.join(format!("{i}-{kind}.json"));
                std::fs::write(&instance, doc.to_string()).unwrap();
                instances.entry(*schema).or_default().push(instance);
            }
        }
    }
    // One run per schema: each is a second or so of start-up.
    for (schema, files) in &instances {
        run(Command::new(tool("check-jsonschema"))
            .arg("--schemafile")
            .arg(repo_root().join("deploy/kubernetes/schemas").join(schema))
            .args(files));
    }
    let kinds: BTreeSet<_> = custom
        .iter()
        .filter(|(_, s)| instances.contains_key(*s))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        kinds.len(),
        CUSTOM_KINDS.len(),
        "some custom kind was in no render: {kinds:?}"
    );
    eprintln!(
        "unchecked offline: the custom resources' CEL rules (x-kubernetes-validations), \
         whether the Gateway accepts the route, what the operators do with their resources, \
         admission (Pod Security) and the network plugin's enforcement"
    );
}

/// checkov's Kubernetes policies pass but for the skips listed, with their
/// reasons, in deploy/kubernetes/checkov-skips.txt; a skip nothing needs any
/// more fails too.
#[test]
fn kubernetes_checkov_finds_nothing_beyond_the_listed_skips() {
    let listed =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/checkov-skips.txt")).unwrap();
    let mut skips: BTreeMap<(String, String), bool> = BTreeMap::new();
    for line in listed
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut words = line.splitn(3, ' ');
        let (id, overlay, reason) = (words.next().unwrap(), words.next().unwrap(), words.next());
        assert!(
            reason.is_some_and(|r| r.split_whitespace().count() >= 5),
            "checkov-skips.txt: {id} needs a reason"
        );
        skips.insert((id.to_owned(), overlay.to_owned()), false);
    }
    // One run over every render (checkov takes seconds to start), told
    // apart by file.
    let dir = renders()[0].file.parent().unwrap().join("checkov");
    std::fs::create_dir_all(&dir).unwrap();
    for render in renders() {
        std::fs::copy(&render.file, dir.join(format!("{}.yaml", render.overlay))).unwrap();
    }
    let output = Command::new(tool("checkov"))
        .args([
            "--skip-download",
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "-d",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("checkov: {}{}", text(&output.stdout), text(&output.stderr)));
    assert_eq!(report["summary"]["parsing_errors"], 0);
    let passed = report["results"]["passed_checks"].as_array().unwrap();
    let mut unexpected = Vec::new();
    for render in renders() {
        let file = format!("/{}.yaml", render.overlay);
        let checked = passed
            .iter()
            .filter(|c| c["file_path"] == file.as_str())
            .count();
        assert!(
            checked > 100,
            "{}: checkov checked little ({checked})",
            render.overlay
        );
        let failures = report["results"]["failed_checks"].as_array().unwrap();
        for failed in failures.iter().filter(|c| c["file_path"] == file.as_str()) {
            let id = failed["check_id"].as_str().unwrap().to_owned();
            let key = [render.overlay, "*"]
                .into_iter()
                .map(|overlay| (id.clone(), overlay.to_owned()))
                .find(|key| skips.contains_key(key));
            match key {
                Some(key) => *skips.get_mut(&key).unwrap() = true,
                None => unexpected.push(format!(
                    "{}: {id} {} {}",
                    render.overlay, failed["resource"], failed["check_name"]
                )),
            }
        }
    }
    assert!(unexpected.is_empty(), "checkov fails {unexpected:#?}");
    let unused: Vec<_> = skips
        .iter()
        .filter(|(_, used)| !**used)
        .map(|(k, _)| k)
        .collect();
    assert!(unused.is_empty(), "skips no longer needed: {unused:?}");
}

/// Startup and liveness ask /healthz, readiness /readyz, on the port the
/// service binds (BIND), where nginx does not stand in between.
#[test]
fn kubernetes_probes_ask_healthz_and_readyz_on_the_services_own_port() {
    for render in renders() {
        let pod = render.web();
        let service = render.container(pod, "service");
        let config = render.config_map("config");
        let bind_port: i64 = config["BIND"].rsplit_once(':').unwrap().1.parse().unwrap();
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &service[probe]["httpGet"];
            assert_eq!(get["path"], path, "{}: {probe}", render.overlay);
            let port = service["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == get["port"] || p["containerPort"] == get["port"])
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {probe}'s port is no port of the container",
                        render.overlay
                    )
                });
            assert_eq!(
                number(&port["containerPort"]),
                bind_port,
                "{}: {probe}",
                render.overlay
            );
        }
        // Migrations run before the first worker listens: the startup
        // probe waits longer than the wait for the migrations' lock.
        let startup = &service["startupProbe"];
        let patience = number(&startup["periodSeconds"]) * number(&startup["failureThreshold"]);
        assert!(
            patience > 60,
            "{}: startup gives {patience} s",
            render.overlay
        );
        // The Service sends traffic to nginx, and its internal port to the
        // service's.
        let ports = render.find("Service", "web")["spec"]["ports"]
            .as_array()
            .unwrap()
            .clone();
        let target =
            |name: &str| ports.iter().find(|p| p["name"] == name).unwrap()["targetPort"].clone();
        assert_eq!(target("http"), "http");
        assert_eq!(target("internal"), "internal");
    }
}

/// The pod outlives its drain: terminationGracePeriodSeconds counts from
/// the preStop delay, so it must exceed the delay + GRACEFUL_TIMEOUT + the
/// workers' half second before draining; nginx waits as long before it
/// quits.
#[test]
fn kubernetes_pods_outlast_their_drain() {
    for render in renders() {
        let pod = render.web();
        let grace = number(&pod["spec"]["terminationGracePeriodSeconds"]);
        let service = render.container(pod, "service");
        let delay = number(&service["lifecycle"]["preStop"]["sleep"]["seconds"]);
        let drain: i64 = render.config_map("config")["GRACEFUL_TIMEOUT"]
            .parse()
            .unwrap();
        assert!(delay >= 5, "{}: preStop {delay} s", render.overlay);
        assert!(
            grace > delay + drain + 1,
            "{}: grace {grace} s <= preStop {delay} s + drain {drain} s + 1",
            render.overlay
        );
        let proxy = render.container(pod, "proxy");
        let quit = proxy["lifecycle"]["preStop"]["exec"]["command"].to_string();
        assert!(
            quit.contains(&format!("sleep {delay};")),
            "{}: {quit}",
            render.overlay
        );
        assert!(quit.contains("-s quit"), "{}: {quit}", render.overlay);
    }
}

/// Every container: non-root, no privilege escalation, no capability, the
/// runtime's seccomp profile and a read-only root; what the service writes
/// (the master's metrics directory, under std::env::temp_dir()) and what
/// nginx writes (its filled-in configuration, pid and buffers) go to
/// emptyDir volumes on /tmp.
#[test]
fn kubernetes_pods_run_restricted_and_write_only_to_their_volumes() {
    for render in renders() {
        for (name, pod) in render.pod_templates() {
            let spec = &pod["spec"];
            assert_eq!(
                spec["automountServiceAccountToken"], false,
                "{}: {name}",
                render.overlay
            );
            for container in spec["containers"].as_array().unwrap() {
                let at = format!("{}: {name} {}", render.overlay, container["name"]);
                let context = &container["securityContext"];
                let non_root = context["runAsNonRoot"] == true
                    || spec["securityContext"]["runAsNonRoot"] == true;
                assert!(non_root, "{at}: may run as root");
                let uid = context["runAsUser"]
                    .as_i64()
                    .or(spec["securityContext"]["runAsUser"].as_i64());
                assert!(
                    uid.is_some_and(|uid| uid >= 10000),
                    "{at}: uid {uid:?}, not a high one"
                );
                assert_eq!(context["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(context["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(
                    context["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{at}"
                );
                assert!(context["capabilities"]["add"].is_null(), "{at}");
                let seccomp = if context["seccompProfile"].is_null() {
                    &spec["securityContext"]["seccompProfile"]
                } else {
                    &context["seccompProfile"]
                };
                assert_eq!(seccomp["type"], "RuntimeDefault", "{at}");
                assert!(
                    !container["resources"]["limits"]["memory"].is_null(),
                    "{at}: no memory limit"
                );
                assert!(
                    !container["resources"]["requests"]["cpu"].is_null(),
                    "{at}: no CPU request"
                );
            }
        }
        let pod = render.web();
        for container in ["service", "proxy"] {
            let mount = render.container(pod, container)["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == "/tmp")
                .unwrap_or_else(|| panic!("{}: {container} has nothing on /tmp", render.overlay))
                .clone();
            let volume = pod["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert!(
                volume["emptyDir"].is_object(),
                "{}: {container}'s /tmp",
                render.overlay
            );
        }
        // nginx fills its configuration in where it may write.
        let proxy = render.config_map("proxy");
        assert_eq!(
            proxy["NGINX_ENVSUBST_OUTPUT_DIR"], "/tmp",
            "{}",
            render.overlay
        );
        let args = render.container(pod, "proxy")["args"].to_string();
        assert!(
            args.contains("\"-c\",\"/tmp/nginx.conf\""),
            "{}: {args}",
            render.overlay
        );
        // The namespace refuses any pod that is not so.
        let namespace = render.of_kind("Namespace").next().unwrap();
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }
}

/// WORKERS and THREADS are set (THREADS' default follows the CPU limit, not
/// the request), fit the CPU limit, and nginx's worker ports are the
/// service's; every setting given is one the service has or nginx.conf
/// reads, described in .env.
#[test]
fn kubernetes_settings_fix_threads_and_workers_and_agree_with_nginx() {
    let described: BTreeSet<String> = env_file(".env")
        .into_keys()
        .collect::<BTreeSet<_>>()
        .union(
            &std::fs::read_to_string(repo_root().join(".env"))
                .unwrap()
                .lines()
                .filter_map(|l| l.trim_start_matches("# ").split_once('='))
                .map(|(name, _)| name.to_owned())
                .collect(),
        )
        .cloned()
        .collect();
    for render in renders() {
        let config = render.config_map("config");
        let proxy = render.config_map("proxy");
        let workers: i64 = config["WORKERS"].parse().unwrap();
        let threads: i64 = config["THREADS"].parse().unwrap();
        let limit = render.container(render.web(), "service")["resources"]["limits"]["cpu"].clone();
        let limit_millis = match limit.as_str() {
            Some(m) if m.ends_with('m') => m.trim_end_matches('m').parse::<i64>().unwrap(),
            _ => number(&limit) * 1000,
        };
        assert!(
            workers * threads * 1000 <= limit_millis,
            "{}: {workers} workers x {threads} threads over a {limit} CPU limit",
            render.overlay
        );
        assert_eq!(proxy["WORKERS"], config["WORKERS"], "{}", render.overlay);
        assert_eq!(
            proxy["FIRST_WORKER_PORT"], config["FIRST_WORKER_PORT"],
            "{}",
            render.overlay
        );
        assert_eq!(proxy["API_HOST"], "127.0.0.1", "{}", render.overlay);
        assert_eq!(
            config["BIND"].rsplit_once(':').unwrap().1,
            proxy["API_PORT"],
            "{}",
            render.overlay
        );
        assert_eq!(
            config["TRUSTED_PROXIES"], "127.0.0.1/32",
            "{}",
            render.overlay
        );
        for name in config.keys().chain(proxy.keys()) {
            let image_own = [
                "NGINX_ENVSUBST_OUTPUT_DIR",
                "API_HOST",
                "API_PORT",
                "WORKERS",
                "FIRST_WORKER_PORT",
            ];
            assert!(
                described.contains(name) || image_own.contains(&name.as_str()),
                "{}: {name} is no setting .env describes",
                render.overlay
            );
        }
        // The image fills in every ${NGINX_...} of nginx.conf from these, or
        // from what the image itself sets.
        let conf = std::fs::read_to_string(repo_root().join("nginx.conf")).unwrap();
        for placeholder in conf.split("${").skip(1) {
            let name = placeholder.split('}').next().unwrap();
            if !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                continue;
            }
            let by_image = ["NGINX_UPSTREAM_SERVERS", "NGINX_STATIC_ROOT"].contains(&name);
            assert!(
                by_image || proxy.contains_key(name),
                "{}: nginx.conf's {name} is not in the proxy ConfigMap",
                render.overlay
            );
        }
    }
}

/// Labels of the pods each workload makes, the operators' too.
fn pods(render: &Render) -> Vec<(String, BTreeMap<String, String>)> {
    let labels = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut pods: Vec<_> = render
        .pod_templates()
        .into_iter()
        .map(|(name, pod)| (name, labels(&pod["metadata"]["labels"])))
        .collect();
    for cluster in render.of_kind("Cluster") {
        let name = cluster["metadata"]["name"].as_str().unwrap();
        pods.push((
            format!("Cluster {name}"),
            BTreeMap::from([("cnpg.io/cluster".to_owned(), name.to_owned())]),
        ));
    }
    for pooler in render.of_kind("Pooler") {
        let name = pooler["metadata"]["name"].as_str().unwrap();
        pods.push((
            format!("Pooler {name}"),
            BTreeMap::from([("cnpg.io/poolerName".to_owned(), name.to_owned())]),
        ));
    }
    pods
}

fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let values: Vec<_> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(e["key"].as_str().unwrap()).map(String::as_str);
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => !value.is_some_and(|v| values.contains(&v)),
                "Exists" => value.is_some(),
                other => other == "DoesNotExist" && value.is_none(),
            }
        });
    by_label && by_expression
}

/// Every policy's pods, and the peers it names in the namespace, are pods
/// that exist (a selector that matches nothing protects nothing); the
/// service's and the Job's pods are closed both ways but for what a policy
/// opens; the databases take connections from the service, the Job and
/// their own operator only.
#[test]
fn kubernetes_network_policies_select_the_pods_they_mean() {
    for render in renders() {
        let pods = pods(render);
        let matching = |selector: &Value| -> Vec<String> {
            pods.iter()
                .filter(|(_, l)| selects(selector, l))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let policies: Vec<_> = render.of_kind("NetworkPolicy").collect();
        for policy in &policies {
            let name = policy["metadata"]["name"].as_str().unwrap();
            let at = format!("{}: NetworkPolicy {name}", render.overlay);
            assert!(
                !matching(&policy["spec"]["podSelector"]).is_empty(),
                "{at} selects no pod"
            );
            for rule in ["ingress", "egress"] {
                for entry in policy["spec"][rule].as_array().into_iter().flatten() {
                    for peer in entry["from"]
                        .as_array()
                        .or(entry["to"].as_array())
                        .into_iter()
                        .flatten()
                    {
                        if peer["podSelector"].is_object() && peer["namespaceSelector"].is_null() {
                            assert!(
                                !matching(&peer["podSelector"]).is_empty(),
                                "{at}: a peer matches no pod"
                            );
                        }
                    }
                }
            }
        }
        for (name, labels) in &pods {
            if name.starts_with("Cluster") || name.starts_with("Pooler") {
                // Ingress only: the operator's pods talk to the API server.
                let closed = policies.iter().any(|p| {
                    selects(&p["spec"]["podSelector"], labels)
                        && p["spec"]["policyTypes"]
                            .as_array()
                            .unwrap()
                            .contains(&Value::from("Ingress"))
                });
                assert!(
                    closed,
                    "{}: nothing limits who reaches {name}",
                    render.overlay
                );
                continue;
            }
            for direction in ["Ingress", "Egress"] {
                let closed = policies.iter().any(|p| {
                    selects(&p["spec"]["podSelector"], labels)
                        && p["spec"]["policyTypes"]
                            .as_array()
                            .unwrap()
                            .contains(&Value::from(direction))
                });
                assert!(closed, "{}: {name}'s {direction} is open", render.overlay);
            }
        }
        // Who reaches the databases' pods from this namespace: the service,
        // the Job, the pooler, the cluster's own instances.
        let allowed = ["Deployment web", "Job migrate"];
        for policy in &policies {
            let targets = matching(&policy["spec"]["podSelector"]);
            if !targets.iter().any(|t| {
                t.starts_with("Cluster")
                    || t.starts_with("Pooler")
                    || t.starts_with("StatefulSet redis")
            }) {
                continue;
            }
            for entry in policy["spec"]["ingress"].as_array().into_iter().flatten() {
                for peer in entry["from"].as_array().expect("a rule open to all").iter() {
                    if peer["podSelector"].is_object() && peer["namespaceSelector"].is_null() {
                        for source in matching(&peer["podSelector"]) {
                            assert!(
                                allowed.contains(&source.as_str())
                                    || source.starts_with("Cluster")
                                    || source.starts_with("Pooler"),
                                "{}: {source} reaches {targets:?}",
                                render.overlay
                            );
                        }
                    } else {
                        let namespace = peer["namespaceSelector"]["matchLabels"]
                            ["kubernetes.io/metadata.name"]
                            .clone();
                        assert_eq!(
                            namespace, "cnpg-system",
                            "{}: {targets:?} open to {peer}",
                            render.overlay
                        );
                    }
                }
            }
        }
    }
}

/// At the autoscaler's most pods, plus the rolling update's surge, each
/// worker's full pool, each starting pod's migration connection and the
/// Job's fit PostgreSQL's max_connections, less a reserve for superusers,
/// the operator and replication; or a pooler stands in between.
#[test]
fn kubernetes_connection_budget_fits_max_connections() {
    for render in renders() {
        let config = render.config_map("config");
        let hpa = render.find("HorizontalPodAutoscaler", "web");
        let surge = number(
            &render.find("Deployment", "web")["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        );
        let pods = number(&hpa["spec"]["maxReplicas"]) + surge;
        let workers: i64 = config["WORKERS"].parse().unwrap();
        let pool: i64 = config["DATABASE_POOL_SIZE"].parse().unwrap();
        let cluster = render.find("Cluster", "postgres");
        let max: i64 = number(&cluster["spec"]["postgresql"]["parameters"]["max_connections"]);
        let reserve = 10;
        match render.of_kind("Pooler").next() {
            None => {
                let budget = pods * workers * pool + pods + 1;
                assert!(
                    budget <= max - reserve,
                    "{}: {pods} pods x {workers} workers x {pool} + {pods} + 1 = {budget} > {max} - {reserve}",
                    render.overlay
                );
            }
            Some(pooler) => {
                let pgbouncer = &pooler["spec"]["pgbouncer"];
                // The Job's migration connects directly.
                let job = 1;
                let servers = number(&pooler["spec"]["instances"])
                    * number(&pgbouncer["parameters"]["default_pool_size"]);
                assert!(
                    servers + job <= max - reserve,
                    "{}: the pooler's {servers}",
                    render.overlay
                );
                assert!(
                    pods * workers * pool
                        <= number(&pgbouncer["parameters"]["max_client_conn"])
                            * number(&pooler["spec"]["instances"]),
                    "{}: more clients than the pooler takes",
                    render.overlay
                );
                assert_eq!(pgbouncer["poolMode"], "transaction");
                assert!(number(&pgbouncer["parameters"]["max_prepared_statements"]) > 0);
                // The migrations' advisory lock belongs to one server connection,
                // which transaction pooling does not keep: the pods leave
                // migrations to the Job, which connects directly.
                assert_eq!(config["MIGRATE_ON_START"], "false", "{}", render.overlay);
            }
        }
    }
}

/// The files under deploy/kubernetes that a repository holds: not a
/// secrets.env (ignored), nor the vendored schemas (their projects' text).
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("schemas") {
                    walk(&path, out);
                }
            } else if !path.ends_with("secrets.env") {
                let relative = path.strip_prefix(repo_root()).unwrap();
                out.push(relative.to_str().unwrap().to_owned());
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("deploy/kubernetes"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    files
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", container["name"]))
}

/// The service and the Job verify PostgreSQL's certificate against the
/// cluster's CA (sslmode=verify-full, sslrootcert a file of the mounted
/// `<cluster>-ca` Secret), and the variables a URL is made of come before
/// it (Kubernetes expands $(NAME) from earlier entries only).
#[test]
fn kubernetes_database_urls_verify_the_server_against_the_clusters_ca() {
    for render in renders() {
        let job = &render.find("Job", "migrate")["spec"]["template"];
        let web = render.web();
        for (pod, container) in [
            (web, render.container(web, "service")),
            (job, render.container(job, "migrate")),
        ] {
            let at = format!("{}: {}", render.overlay, container["name"]);
            let url = env_value(container, "DATABASE_URL")["value"]
                .as_str()
                .unwrap();
            assert!(url.contains("sslmode=verify-full"), "{at}: {url}");
            let root = url
                .split("sslrootcert=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap();
            let (dir, file) = root.rsplit_once('/').unwrap();
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap();
            let volume = pod["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert_eq!(volume["secret"]["secretName"], "postgres-ca", "{at}");
            assert!(
                volume["secret"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["key"] == "ca.crt" && i["path"] == file),
                "{at}"
            );
            let names: Vec<_> = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            let position = names.iter().position(|n| *n == "DATABASE_URL").unwrap();
            for used in url
                .split("$(")
                .skip(1)
                .map(|s| s.split(')').next().unwrap())
            {
                let at_used = names.iter().position(|n| *n == used);
                assert!(
                    at_used.is_some_and(|p| p < position),
                    "{at}: $({used}) is not defined before DATABASE_URL"
                );
            }
        }
        // The Job migrates directly, never through a pooler.
        let job_url = env_value(render.container(job, "migrate"), "DATABASE_URL")["value"]
            .as_str()
            .unwrap();
        assert!(
            job_url.starts_with("$(POSTGRES_URI)"),
            "{}: {job_url}",
            render.overlay
        );
    }
}

/// The Job runs the release's own `db migrate` (the same image as the
/// service), and it and the settings it reads carry the labels the release
/// procedure applies them by, before the rest.
#[test]
fn kubernetes_migrations_run_as_a_job_before_the_release_serves() {
    let help = crate::cli::cli_in(&repo_root(), &["db", "migrate", "--help"], &[], "");
    assert!(help.status.success(), "{}", text(&help.stderr));
    for render in renders() {
        let job = render.find("Job", "migrate");
        let container = render.container(&job["spec"]["template"], "migrate");
        assert_eq!(container["args"], serde_json::json!(["db", "migrate"]));
        assert_eq!(
            container["image"],
            render.container(render.web(), "service")["image"]
        );
        assert!(
            job["spec"]["ttlSecondsAfterFinished"].is_number(),
            "{}",
            render.overlay
        );
        assert_eq!(
            job["metadata"]["labels"]["app.kubernetes.io/component"],
            "migrate"
        );
        for kind in ["ConfigMap", "Secret"] {
            for doc in render.of_kind(kind) {
                assert_eq!(
                    doc["metadata"]["labels"]["app.kubernetes.io/component"], "settings",
                    "{}: {kind} {}",
                    render.overlay, doc["metadata"]["name"]
                );
            }
        }
    }
    let guide = std::fs::read_to_string(repo_root().join("docs/deploy-kubernetes.md")).unwrap();
    assert!(guide.contains("-l 'app.kubernetes.io/component in (migrate,settings)'"));
}

/// No secret's value is in the repository: the Secret is generated from an
/// overlay's secrets.env, which git ignores, and whose committed example
/// holds placeholders only; no manifest carries a Secret or a credential.
#[test]
fn kubernetes_secrets_come_from_untracked_files_only() {
    let ignore = std::fs::read_to_string(repo_root().join(".gitignore")).unwrap();
    assert!(
        ignore
            .lines()
            .any(|l| l == "deploy/kubernetes/overlays/*/secrets.env"),
        ".gitignore does not ignore the overlays' secrets.env"
    );
    for overlay in ["dev", "prod"] {
        let dir = format!("deploy/kubernetes/overlays/{overlay}");
        let example =
            std::fs::read_to_string(repo_root().join(&dir).join("secrets.env.example")).unwrap();
        for (name, value) in example
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
        {
            assert!(
                value.contains("CHANGE_ME"),
                "{dir}/secrets.env.example: {name} holds a value"
            );
        }
        let kustomization =
            std::fs::read_to_string(repo_root().join(&dir).join("kustomization.yaml")).unwrap();
        assert!(kustomization.contains("envs: [secrets.env]"), "{dir}");
    }
    for file in deploy_files() {
        let content = std::fs::read_to_string(repo_root().join(&file)).unwrap();
        assert!(!content.contains("kind: Secret"), "{file} holds a Secret");
        assert!(!content.contains("stringData"), "{file}");
        // A URL with a password in it: only as a placeholder or variable.
        for (i, _) in content.match_indices("://") {
            let rest = &content[i + 3..];
            let authority = rest.split(['/', ' ', '\n', '?']).next().unwrap();
            if let Some((credentials, _)) = authority.rsplit_once('@') {
                let password = credentials.split_once(':').map_or("", |(_, p)| p);
                assert!(
                    password.is_empty() || password == "CHANGE_ME" || password.starts_with("$("),
                    "{file}: a password in {authority}"
                );
            }
        }
    }
    // Every secret a render uses comes from the generator or an operator.
    for render in renders() {
        for secret in render.of_kind("Secret") {
            assert!(secret["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("secrets-"));
        }
    }
}

/// The project's name is in the overlays' kustomization.yaml only (twins,
/// rendered with each project's name); every other file is the same in
/// every project. And the dev overlay's images are compose's, built locally.
#[test]
fn kubernetes_names_the_project_in_the_overlays_only() {
    let manifest = std::fs::read_to_string(repo_root().join("api/Cargo.toml")).unwrap();
    let name = manifest
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let mut twins = BTreeSet::new();
    for file in deploy_files() {
        let content = std::fs::read_to_string(repo_root().join(&file))
            .unwrap()
            // Names that are the same in every project.
            .replace("15-api-upstreams", "")
            .replace("gateway-api", "");
        let named = content.match_indices(&name).any(|(i, _)| {
            let before = content[..i].chars().next_back();
            let after = content[i + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !word(before) && !word(after)
        });
        if named {
            twins.insert(file);
        }
    }
    let expected: BTreeSet<_> = [
        "deploy/kubernetes/overlays/dev/kustomization.yaml",
        "deploy/kubernetes/overlays/prod/kustomization.yaml",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert!(
        twins.is_subset(&expected),
        "the name {name} is in {twins:?}"
    );
    let include =
        std::fs::read_to_string(repo_root().join("cargo-generate.toml")).unwrap_or_default();
    if !include.is_empty() {
        for file in &expected {
            assert!(
                include.contains(&format!("\"/{file}\"")),
                "{file} is not a twin"
            );
        }
    }
    let dev = render("dev");
    assert_eq!(
        dev.container(dev.web(), "service")["image"],
        format!("{name}:dev")
    );
    assert_eq!(
        dev.container(dev.web(), "proxy")["image"],
        format!("{name}-proxy:dev")
    );
    let prod = render("prod");
    assert_eq!(prod.find("Namespace", &name)["kind"], "Namespace");
}

/// The dashboards add every series up (sum, or a quantile of summed
/// buckets), so they read the same from one container or from many pods
/// each scraped on its own, and none picks out an instance or a pod.
#[test]
fn grafana_dashboards_add_up_every_pod() {
    fn exprs(panel: &Value, out: &mut Vec<String>) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_owned());
            }
        }
        for child in panel["panels"].as_array().into_iter().flatten() {
            exprs(child, out);
        }
    }
    let dir = repo_root().join("monitoring/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut all = Vec::new();
        exprs(&dashboard, &mut all);
        for expr in all {
            for operand in expr.split(" / ") {
                let operand = operand.trim();
                let summed = operand.starts_with("sum(")
                    || operand.starts_with("sum by (")
                    || (operand.starts_with("histogram_quantile(")
                        && operand.contains("sum by (le"));
                assert!(
                    summed,
                    "{}: {expr} does not add the pods up",
                    path.display()
                );
            }
            for label in ["instance", "pod"] {
                assert!(
                    !expr.contains(&format!("{label}=")),
                    "{}: {expr}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} queries");
}

/// nginx accepts the configuration the proxy image fills in from the proxy
/// ConfigMap (plus NGINX_STATIC_ROOT, which the image sets), with a prefix
/// as the pod's /tmp is: one upstream per worker port on loopback and the
/// shared port as backup.
#[test]
fn kubernetes_nginx_accepts_its_configuration_filled_in_from_the_proxy_config_map() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("NGINX_STATIC_ROOT=/srv/static"));
    for render in renders() {
        let proxy = render.config_map("proxy");
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(repo_root().join("scripts/nginx.sh"))
            .arg("check")
            .arg(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&proxy)
            .env("NGINX_STATIC_ROOT", "/srv/static")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            render.overlay,
            text(&output.stderr)
        );
        let rendered = std::fs::read_to_string(dir.path().join("nginx.conf")).unwrap();
        let workers: usize = proxy["WORKERS"].parse().unwrap();
        assert_eq!(
            rendered.matches("server 127.0.0.1:").count(),
            workers + 1,
            "{}",
            render.overlay
        );
        assert!(rendered.contains(&format!("listen {};", proxy["NGINX_LISTEN"])));
    }
}
