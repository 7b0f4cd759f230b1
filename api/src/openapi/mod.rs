//! The OpenAPI documents as served and committed: the whole API at
//! `/openapi.json`, and one document a version at `/vN/openapi.json` with
//! only that version's paths. `make openapi` writes the same bytes to
//! `openapi/`, and the tests fail when the two differ, so every change to the
//! API shows up in review. [`compat`] tells breaking changes from the rest.
//!
//! poem-openapi's document gets two truths added here. Request bodies reject
//! unknown fields (`deny_unknown_fields`, so no one slips a `role` into
//! `/setName`), which it does not describe, so each request body schema gets
//! `additionalProperties: false`. And the operations of deprecated versions
//! (`api/versions.toml`) are flagged `deprecated`.

pub mod compat;

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::versions::{self, Versions};

/// The file, in `openapi/`, of the whole API's document.
pub const COMBINED_FILE: &str = "openapi.json";

/// HTTP methods, as OpenAPI path items name them.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the OpenAPI document is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Policy(#[from] versions::PolicyError),
}

/// Which paths of the whole API a document covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    /// Those under `/{version}`.
    Version(&'a str),
    /// Those under no version, such as `/healthz`: every version's clients use
    /// them.
    Unversioned,
}

impl Scope<'_> {
    pub fn contains(&self, path: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Version(version) => versions::version_of(path) == Some(*version),
            Scope::Unversioned => versions::version_of(path).is_none(),
        }
    }
}

/// The served documents, and the deprecation policy they were built with.
#[derive(Clone, Debug)]
pub struct Documents {
    combined: Value,
    /// Oldest first.
    versions: Vec<(String, Value)>,
    policy: Versions,
}

impl Documents {
    /// From poem-openapi's document and a policy written like
    /// `api/versions.toml`.
    pub fn build(spec: &str, policy: &str) -> Result<Self, DocumentError> {
        let mut combined: Value = serde_json::from_str(spec)?;
        close_request_bodies(&mut combined);
        let served = versions_in(&combined);
        let policy = Versions::parse(policy, &served)?;
        for version in &served {
            if policy.is_deprecated(version) {
                flag_deprecated(&mut combined, Scope::Version(version));
            }
        }
        let versions = served
            .into_iter()
            .map(|version| {
                let mut document = scoped(&combined, Scope::Version(&version));
                describe_version(&mut document, &version, &policy);
                (version, document)
            })
            .collect();
        Ok(Documents {
            combined,
            versions,
            policy,
        })
    }

    pub fn combined(&self) -> &Value {
        &self.combined
    }

    /// Each version and its document, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.versions
            .iter()
            .map(|(version, document)| (version.as_str(), document))
    }

    pub fn policy(&self) -> &Versions {
        &self.policy
    }

    /// File name in `openapi/` and document: the whole API's first.
    pub fn files(&self) -> Vec<(String, &Value)> {
        let mut files = vec![(COMBINED_FILE.to_owned(), &self.combined)];
        files.extend(
            self.versions()
                .map(|(version, document)| ([version, ".json"].concat(), document)),
        );
        files
    }
}

/// A document as served and committed: pretty, with a final newline, so
/// that the snapshots diff well.
pub fn render(document: &Value) -> String {
    let mut text = serde_json::to_string_pretty(document).unwrap_or_else(|_| document.to_string());
    text.push('\n');
    text
}

/// The versions a document has paths under, oldest first.
pub fn versions_in(document: &Value) -> Vec<String> {
    let mut versions: Vec<String> = paths(document)
        .filter_map(|(path, _)| versions::version_of(path))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    versions::sort(&mut versions);
    versions
}

/// Each path of a document, with its path item.
pub fn paths(document: &Value) -> impl Iterator<Item = (&String, &Value)> {
    document["paths"].as_object().into_iter().flatten()
}

/// The operations (method and operation object) of a path item.
pub fn operations(item: &Value) -> impl Iterator<Item = (&'static str, &Value)> {
    METHODS
        .into_iter()
        .filter_map(move |method| item.get(method).map(|operation| (method, operation)))
}

/// `document` cut down to the paths in `scope`, with only the schemas,
/// security schemes and tags those paths use.
pub fn scoped(document: &Value, scope: Scope) -> Value {
    let mut scoped = document.clone();
    let kept: Map<String, Value> = paths(document)
        .filter(|(path, _)| scope.contains(path))
        .map(|(path, item)| (path.clone(), item.clone()))
        .collect();
    let schemas = referenced_schemas(document, &Value::Object(kept.clone()));
    let mut security = BTreeSet::new();
    let mut tags = BTreeSet::new();
    for operation in kept
        .values()
        .flat_map(|item| operations(item).map(|(_, op)| op))
    {
        let requirements = operation["security"].as_array().into_iter().flatten();
        security.extend(
            requirements
                .filter_map(Value::as_object)
                .flat_map(|r| r.keys().cloned()),
        );
        let names = operation["tags"].as_array().into_iter().flatten();
        tags.extend(names.filter_map(Value::as_str).map(str::to_owned));
    }
    scoped["paths"] = Value::Object(kept);
    if let Some(components) = scoped["components"].as_object_mut() {
        retain_keys(components.get_mut("schemas"), &schemas);
        retain_keys(components.get_mut("securitySchemes"), &security);
        components.retain(|_, entries| entries.as_object().is_none_or(|e| !e.is_empty()));
    }
    if let Some(list) = scoped["tags"].as_array_mut() {
        list.retain(|tag| tag["name"].as_str().is_some_and(|name| tags.contains(name)));
    }
    scoped
}

fn retain_keys(entries: Option<&mut Value>, keep: &BTreeSet<String>) {
    if let Some(entries) = entries.and_then(Value::as_object_mut) {
        entries.retain(|name, _| keep.contains(name));
    }
}

/// The schemas `root` refers to, directly or through other schemas.
fn referenced_schemas(document: &Value, root: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(object) => {
                if let Some(name) = object
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(schema_name)
                {
                    if found.insert(name.to_owned()) {
                        pending.push(&document["components"]["schemas"][name]);
                    }
                }
                pending.extend(object.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    found
}

/// `Problem` for `#/components/schemas/Problem`.
pub fn schema_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/components/schemas/")
}

fn close_request_bodies(document: &mut Value) {
    let bodies: Vec<String> = paths(document)
        .flat_map(|(_, item)| operations(item))
        .filter_map(|(_, operation)| operation["requestBody"]["content"].as_object())
        .flat_map(|media_types| media_types.values())
        .filter_map(|media_type| media_type["schema"]["$ref"].as_str().and_then(schema_name))
        .map(str::to_owned)
        .collect();
    for name in bodies {
        if let Some(schema) = document["components"]["schemas"][&name].as_object_mut() {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
}

fn flag_deprecated(document: &mut Value, scope: Scope) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for (_, item) in paths.iter_mut().filter(|(path, _)| scope.contains(path)) {
        for method in METHODS {
            if let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) {
                operation.insert("deprecated".into(), true.into());
            }
        }
    }
}

/// A version's document is titled with it and, when deprecated, says until
/// when and what replaces it.
fn describe_version(document: &mut Value, version: &str, policy: &Versions) {
    let info = &mut document["info"];
    let title = info["title"].as_str().unwrap_or_default();
    info["title"] = [title, " ", version].concat().into();
    info["version"] = version.into();
    let Some(deprecation) = policy.deprecation(version) else {
        return;
    };
    let mut note = ["**Deprecated** since ", &deprecation.since].concat();
    if let Some(sunset) = &deprecation.sunset {
        note.push_str(&[", and may be removed after ", sunset].concat());
    }
    if let Some(successor) = &deprecation.successor {
        note.push_str(&["; use ", successor, " (/", successor, "/openapi.json)"].concat());
    }
    note.push('.');
    let description = match info["description"].as_str() {
        Some(description) => [description, "\n\n", &note].concat(),
        None => note,
    };
    info["description"] = description.into();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> String {
        json!({
            "openapi": "3.0.0",
            "info": { "title": "svc", "version": "1.2.3" },
            "tags": [{ "name": "V1" }, { "name": "V2" }, { "name": "Orders" }],
            "paths": {
                "/v1/hello": { "get": { "tags": ["V1"], "responses": { "200": {
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/HelloV1" } } }
                } } } },
                "/v2/me": { "get": { "tags": ["V2"], "security": [{ "ApiKey": [] }], "responses": { "200": {
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Me" } } }
                } } } },
                "/orders": { "post": { "tags": ["Orders"],
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Order" } } } },
                    "responses": { "204": {} } } }
            },
            "components": {
                "schemas": {
                    "HelloV1": { "type": "object", "properties": { "message": { "type": "string" } } },
                    "Me": { "type": "object", "properties": { "name": { "$ref": "#/components/schemas/Name" } } },
                    "Name": { "type": "string" },
                    "Order": { "type": "object", "properties": { "user": { "type": "string" } } }
                },
                "securitySchemes": { "ApiKey": { "type": "apiKey", "in": "header", "name": "X-Api-Key" } }
            }
        })
        .to_string()
    }

    #[test]
    fn each_version_gets_a_document_of_its_own_paths_and_what_they_use() {
        let documents = Documents::build(&spec(), "").unwrap();
        let names: Vec<&str> = documents.versions().map(|(v, _)| v).collect();
        assert_eq!(names, ["v1", "v2"]);

        let (_, v2) = documents.versions().nth(1).unwrap();
        assert_eq!(v2["paths"].as_object().unwrap().len(), 1);
        assert!(v2["paths"]["/v2/me"].is_object());
        let schemas: Vec<&String> = v2["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(schemas, ["Me", "Name"]);
        assert!(v2["components"]["securitySchemes"]["ApiKey"].is_object());
        assert_eq!(v2["tags"], json!([{ "name": "V2" }]));
        assert_eq!(v2["info"], json!({ "title": "svc v2", "version": "v2" }));

        let (_, v1) = documents.versions().next().unwrap();
        assert!(v1["components"].get("securitySchemes").is_none());
    }

    #[test]
    fn request_bodies_are_closed_in_every_document() {
        let documents = Documents::build(&spec(), "").unwrap();
        let order = &documents.combined()["components"]["schemas"]["Order"];
        assert_eq!(order["additionalProperties"], false);
        let unversioned = scoped(documents.combined(), Scope::Unversioned);
        assert_eq!(unversioned["paths"].as_object().unwrap().len(), 1);
        assert!(unversioned["paths"]["/orders"].is_object());
    }

    #[test]
    fn a_deprecated_version_is_flagged_and_says_what_replaces_it() {
        let policy = "[v1]\ndeprecated = 2026-11-01\nsunset = 2027-05-01\n";
        let documents = Documents::build(&spec(), policy).unwrap();
        let combined = documents.combined();
        assert_eq!(combined["paths"]["/v1/hello"]["get"]["deprecated"], true);
        assert!(combined["paths"]["/v2/me"]["get"]
            .get("deprecated")
            .is_none());
        assert!(combined["paths"]["/orders"]["post"]
            .get("deprecated")
            .is_none());

        let (_, v1) = documents.versions().next().unwrap();
        assert_eq!(v1["paths"]["/v1/hello"]["get"]["deprecated"], true);
        assert_eq!(
            v1["info"]["description"],
            "**Deprecated** since 2026-11-01, and may be removed after 2027-05-01; use v2 (/v2/openapi.json)."
        );
    }

    #[test]
    fn a_policy_naming_an_unserved_version_fails_the_build() {
        assert!(Documents::build(&spec(), "[v3]\ndeprecated = 2026-11-01\n").is_err());
    }

    #[test]
    fn files_are_named_after_their_versions() {
        let documents = Documents::build(&spec(), "").unwrap();
        let names: Vec<String> = documents
            .files()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["openapi.json", "v1.json", "v2.json"]);
        assert!(render(documents.combined()).ends_with("}\n"));
    }

    #[test]
    fn this_build_has_a_document_for_each_version() {
        let documents = crate::routes::documents().unwrap();
        assert!(documents.versions().count() >= 2);
        for (version, document) in documents.versions() {
            let paths = document["paths"].as_object().unwrap();
            assert!(!paths.is_empty(), "{version} has no paths");
            assert!(paths
                .keys()
                .all(|path| Scope::Version(version).contains(path)));
        }
    }
}
