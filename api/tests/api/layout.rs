//! The shape of `api/src`, as CONTRIBUTING.md describes it: the core's
//! top-level modules depend on each other without cycles, the core names no
//! feature module outside `modules.rs`, and no domain or storage code uses
//! the HTTP edge's error type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::helpers::repo_root;

fn src() -> PathBuf {
    repo_root().join("api/src")
}

/// Every `.rs` file under `dir`, with its text less any unit tests at its
/// end (a test may reach anywhere).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(tests) => text[..tests].to_owned(),
                    None => text,
                };
                found.push((path, code));
            }
        }
    }
    found.sort();
    found
}

/// The top-level module a file belongs to: `storage` for
/// `src/storage/redis.rs`, `modules` for everything under `src/modules/`.
fn top_level(path: &Path) -> String {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules `code` names through `crate::`, in paths and in
/// grouped imports (`use crate::{a, b::c}`).
fn references(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                named.insert(identifier(item.trim()).to_owned());
            }
        } else {
            named.insert(identifier(rest).to_owned());
        }
    }
    named.remove("");
    named
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources(&src()) {
        let from = top_level(&path);
        if from == "main" || from == "lib" {
            continue;
        }
        let targets = edges.entry(from.clone()).or_default();
        targets.extend(references(&code).into_iter().filter(|to| *to != from));
    }
    edges
}

/// A cycle through `module`, if there is one.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, module: &str) -> Option<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let last = path.last().unwrap().clone();
        for next in edges.get(&last).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(edges, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![module.to_owned()];
    walk(edges, module, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_core_modules_depend_on_each_other_without_cycles() {
    let edges = graph();
    assert!(edges.contains_key("startup") && edges.contains_key("storage"));
    for module in edges.keys() {
        if let Some(cycle) = cycle_from(&edges, module) {
            panic!("modules in a cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_core_names_no_feature_module_outside_the_wiring() {
    let features: Vec<String> = std::fs::read_dir(src().join("modules"))
        .map(|dir| {
            dir.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for (path, code) in sources(&src()) {
        if top_level(&path) == "modules" {
            continue;
        }
        for feature in &features {
            // `crate::modules::auth`, or `auth` among `use crate::modules::{..}`.
            let grouped = code.match_indices("modules::{").any(|(at, _)| {
                let group = &code[at + "modules::{".len()..];
                let group = &group[..group.find('}').unwrap_or(group.len())];
                group
                    .split(',')
                    .any(|item| identifier(item.trim()) == feature)
            });
            assert!(
                !code.contains(&format!("modules::{feature}")) && !grouped,
                "{} names the {feature} module; only modules.rs may",
                path.display()
            );
        }
    }
}

#[test]
fn domain_and_storage_code_never_uses_the_http_error_type() {
    let below_the_edge = [
        "storage",
        "ratelimit",
        "versions",
        "metrics",
        "state",
        "extension",
    ];
    for (path, code) in sources(&src()) {
        let module = top_level(&path);
        let relative = path
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // In a module, the HTTP edge is routes/ and the CLI, which prints
        // the edge's messages.
        let module_domain = module == "modules"
            && !relative.contains("/routes/")
            && !relative.ends_with("/cli.rs")
            && relative != "modules.rs";
        if below_the_edge.contains(&module.as_str()) || module_domain {
            assert!(
                !code.contains("ApiError") && !references(&code).contains("error"),
                "{relative} uses the HTTP edge's error type"
            );
        }
    }
}
