//! Breaking changes between two OpenAPI documents of one API: what a client
//! written against the old document could trip over when served the new.
//!
//! Breaking: a removed path or operation; a new required parameter, request
//! body or request field; a request field or value no longer accepted; a
//! removed success status, response media type, response header or response
//! field; a response field that may now be absent or null; a new value in a
//! response enum; a changed type or format.
//!
//! Not checked: tightened validation (lengths, patterns, ranges), `oneOf` and
//! `anyOf`, and security requirements. Renaming a path parameter is not a
//! change (`/users/{id}` is `/users/{user_id}` to a client).

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::{operations, paths, schema_name};

/// One breaking change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaking {
    /// `GET /v2/users 200 application/json: items[].name`.
    pub at: String,
    pub what: String,
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// Every breaking change from `old` to `new`, in path order.
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<Breaking> {
    let mut diff = Diff {
        old,
        new,
        found: Vec::new(),
        compared: HashSet::new(),
    };
    let new_paths: Vec<(String, &Value)> =
        paths(new).map(|(path, item)| (shape(path), item)).collect();
    for (path, old_item) in paths(old) {
        // The same path, else one that differs only in its parameters'
        // names (a document that has both is ambiguous, but each is still
        // itself).
        let wanted = shape(path);
        let same = paths(new).find(|(new_path, _)| *new_path == path);
        let renamed = || {
            let found = new_paths.iter().find(|(shape, _)| *shape == wanted);
            found.map(|(_, item)| *item)
        };
        let Some(new_item) = same.map(|(_, item)| item).or_else(renamed) else {
            diff.report(path, "", "the path was removed");
            continue;
        };
        for (method, old_operation) in operations(old_item) {
            let at = [&method.to_uppercase(), " ", path].concat();
            match new_item.get(method) {
                Some(new_operation) => diff.operation(&at, old_operation, new_operation),
                None => diff.report(&at, "", "the operation was removed"),
            }
        }
    }
    diff.found
}

/// A path with its parameters' names left out: `/users/{}`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// Sent by clients: it must not accept less.
    Request,
    /// Read by clients: it must not promise less.
    Response,
}

struct Diff<'a> {
    old: &'a Value,
    new: &'a Value,
    found: Vec<Breaking>,
    /// Named schemas already compared, so that recursive and shared schemas
    /// are compared (and reported) once.
    compared: HashSet<(String, String, Direction)>,
}

impl Diff<'_> {
    fn report(&mut self, at: &str, field: &str, what: impl Into<String>) {
        let at = if field.is_empty() {
            at.to_owned()
        } else {
            [at, ": ", field.trim_start_matches('.')].concat()
        };
        self.found.push(Breaking {
            at,
            what: what.into(),
        });
    }

    fn operation(&mut self, at: &str, old: &Value, new: &Value) {
        self.parameters(at, old, new);
        self.request_body(at, old, new);
        self.responses(at, old, new);
    }

    fn parameters(&mut self, at: &str, old: &Value, new: &Value) {
        let old_parameters = parameters(old);
        for ((place, name, nth), parameter) in parameters(new) {
            let at = [at, " ", place, " parameter ", name].concat();
            let required = parameter["required"] == true;
            let key = (place, name, nth);
            match old_parameters.iter().find(|(old_key, _)| *old_key == key) {
                None if required => self.report(&at, "", "a new required parameter"),
                None => {}
                Some((_, before)) => {
                    if required && before["required"] != true {
                        self.report(&at, "", "now required");
                    }
                    let direction = Direction::Request;
                    self.schema(&at, "", &before["schema"], &parameter["schema"], direction);
                }
            }
        }
    }

    fn request_body(&mut self, at: &str, old: &Value, new: &Value) {
        let old_body = resolve_body(self.old, &old["requestBody"]);
        let new_body = resolve_body(self.new, &new["requestBody"]);
        let (Some(new_body), at) = (new_body, [at, " request body"].concat()) else {
            return;
        };
        let Some(old_body) = old_body else {
            if new_body["required"] == true {
                self.report(&at, "", "a request body is now required");
            }
            return;
        };
        if new_body["required"] == true && old_body["required"] != true {
            self.report(&at, "", "now required");
        }
        for (media_type, old_content) in content(old_body) {
            let at = [&at, " ", media_type].concat();
            match new_body["content"].get(media_type) {
                None => self.report(&at, "", "this media type is no longer accepted"),
                Some(new_content) => self.schema(
                    &at,
                    "",
                    &old_content["schema"],
                    &new_content["schema"],
                    Direction::Request,
                ),
            }
        }
    }

    fn responses(&mut self, at: &str, old: &Value, new: &Value) {
        let old_responses = old["responses"].as_object().into_iter().flatten();
        for (status, old_response) in old_responses {
            let at = [at, " ", status].concat();
            let Some(new_response) = new["responses"].get(status) else {
                // Clients must handle errors they were never promised; a
                // success they were promised is another matter.
                if status.starts_with('2') {
                    self.report(&at, "", "this response was removed");
                }
                continue;
            };
            let new_headers: BTreeSet<String> = new_response["headers"]
                .as_object()
                .into_iter()
                .flat_map(|headers| headers.keys().map(|name| name.to_lowercase()))
                .collect();
            let old_headers = old_response["headers"].as_object().into_iter().flatten();
            for (name, _) in old_headers {
                if !new_headers.contains(&name.to_lowercase()) {
                    self.report(&at, "", ["the ", name, " header was removed"].concat());
                }
            }
            for (media_type, old_content) in content(old_response) {
                let at = [&at, " ", media_type].concat();
                match new_response["content"].get(media_type) {
                    None => self.report(&at, "", "this media type is no longer returned"),
                    Some(new_content) => self.schema(
                        &at,
                        "",
                        &old_content["schema"],
                        &new_content["schema"],
                        Direction::Response,
                    ),
                }
            }
        }
    }

    fn schema(&mut self, at: &str, field: &str, old: &Value, new: &Value, direction: Direction) {
        let (old, old_name) = resolve(self.old, old);
        let (new, new_name) = resolve(self.new, new);
        if let (Some(old_name), Some(new_name)) = (old_name, new_name) {
            let key = (old_name.to_owned(), new_name.to_owned(), direction);
            if !self.compared.insert(key) {
                return;
            }
        }
        if !self.same_type(at, field, old, new, direction) {
            return;
        }
        self.values(at, field, old, new, direction);
        self.properties(at, field, old, new, direction);
        if old.get("items").is_some() && new.get("items").is_some() {
            let field = [field, "[]"].concat();
            self.schema(at, &field, &old["items"], &new["items"], direction);
        }
    }

    /// Reports a changed type or format; false when the types differ, so
    /// that nothing below them is compared.
    fn same_type(
        &mut self,
        at: &str,
        field: &str,
        old: &Value,
        new: &Value,
        direction: Direction,
    ) -> bool {
        for key in ["type", "format"] {
            let (before, after) = (old.get(key), new.get(key));
            let narrowed = match direction {
                // Any value was accepted; now only some are.
                Direction::Request => before.is_none() && after.is_some(),
                // Some kind of value was promised; now anything may come.
                Direction::Response => before.is_some() && after.is_none(),
            };
            let changed = before.is_some() && after.is_some() && before != after;
            if changed || narrowed {
                let what = [key, " changed from ", &shown(before), " to ", &shown(after)].concat();
                self.report(at, field, what);
                return key != "type";
            }
        }
        true
    }

    fn values(&mut self, at: &str, field: &str, old: &Value, new: &Value, direction: Direction) {
        let old_values = old["enum"].as_array();
        let new_values = new["enum"].as_array();
        match direction {
            Direction::Request => {
                match (old_values, new_values) {
                    (None, Some(_)) => self.report(at, field, "only some values are accepted now"),
                    (Some(old_values), Some(new_values)) => {
                        for value in old_values.iter().filter(|v| !new_values.contains(v)) {
                            self.report(
                                at,
                                field,
                                ["no longer accepts ", &value.to_string()].concat(),
                            );
                        }
                    }
                    _ => {}
                }
                if old["nullable"] == true && new["nullable"] != true {
                    self.report(at, field, "null is no longer accepted");
                }
            }
            Direction::Response => {
                if let Some(old_values) = old_values {
                    match new_values {
                        None => self.report(at, field, "may now be any value"),
                        Some(new_values) => {
                            for value in new_values.iter().filter(|v| !old_values.contains(v)) {
                                self.report(
                                    at,
                                    field,
                                    ["may now be ", &value.to_string()].concat(),
                                );
                            }
                        }
                    }
                }
                if new["nullable"] == true && old["nullable"] != true {
                    self.report(at, field, "may now be null");
                }
            }
        }
    }

    fn properties(
        &mut self,
        at: &str,
        field: &str,
        old: &Value,
        new: &Value,
        direction: Direction,
    ) {
        let empty = Map::new();
        let old_properties = old["properties"].as_object().unwrap_or(&empty);
        let new_properties = new["properties"].as_object().unwrap_or(&empty);
        let old_required = required(old);
        let new_required = required(new);
        let name = |property: &str| [field, ".", property].concat();
        match direction {
            Direction::Request => {
                for property in new_properties
                    .keys()
                    .filter(|p| new_required.contains(p.as_str()))
                {
                    if !old_properties.contains_key(property) {
                        self.report(at, &name(property), "a new required field");
                    } else if !old_required.contains(property.as_str()) {
                        self.report(at, &name(property), "now required");
                    }
                }
                if new["additionalProperties"] == false {
                    for property in old_properties
                        .keys()
                        .filter(|p| !new_properties.contains_key(*p))
                    {
                        self.report(at, &name(property), "no longer accepted");
                    }
                }
            }
            Direction::Response => {
                for property in old_properties.keys() {
                    if !new_properties.contains_key(property) {
                        self.report(at, &name(property), "the field was removed");
                    } else if old_required.contains(property.as_str())
                        && !new_required.contains(property.as_str())
                    {
                        self.report(at, &name(property), "may now be absent");
                    }
                }
            }
        }
        for (property, old_schema) in old_properties {
            if let Some(new_schema) = new_properties.get(property) {
                self.schema(at, &name(property), old_schema, new_schema, direction);
            }
        }
    }
}

/// Each parameter by where it goes, its name, and which of that name it
/// is (a document that lists one twice is invalid, but the first of the
/// old is still the first of the new).
fn parameters(operation: &Value) -> Vec<((&str, &str, usize), &Value)> {
    let list = operation["parameters"].as_array().into_iter().flatten();
    let mut found: Vec<((&str, &str, usize), &Value)> = Vec::new();
    for parameter in list {
        let (Some(place), Some(name)) = (parameter["in"].as_str(), parameter["name"].as_str())
        else {
            continue;
        };
        let nth = found
            .iter()
            .filter(|((p, n, _), _)| (*p, *n) == (place, name))
            .count();
        found.push(((place, name, nth), parameter));
    }
    found
}

fn content(body: &Value) -> impl Iterator<Item = (&String, &Value)> {
    body["content"].as_object().into_iter().flatten()
}

fn required(schema: &Value) -> BTreeSet<&str> {
    let names = schema["required"].as_array().into_iter().flatten();
    names.filter_map(Value::as_str).collect()
}

fn resolve_body<'a>(document: &'a Value, body: &'a Value) -> Option<&'a Value> {
    let reference = body["$ref"].as_str();
    let name = reference.and_then(|r| r.strip_prefix("#/components/requestBodies/"));
    let body = match name {
        Some(name) => &document["components"]["requestBodies"][name],
        None => body,
    };
    body.is_object().then_some(body)
}

/// Follows `$ref`s, and the one-element `allOf` that generators wrap a
/// described reference in, to the schema itself and its name.
fn resolve<'a>(document: &'a Value, mut schema: &'a Value) -> (&'a Value, Option<&'a str>) {
    let mut name = None;
    // Bounded: a reference cycle must not hang the check.
    for _ in 0..32 {
        if let Some(target) = schema["$ref"].as_str().and_then(schema_name) {
            name = Some(target);
            schema = &document["components"]["schemas"][target];
        } else if let Some([only]) = schema["allOf"].as_array().map(Vec::as_slice) {
            schema = only;
        } else {
            break;
        }
    }
    (schema, name)
}

fn shown(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "anything".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A small API: search users, log in.
    fn base() -> Value {
        json!({
            "openapi": "3.0.0",
            "info": { "title": "t", "version": "v2" },
            "paths": {
                "/v2/users/{id}": { "get": {
                    "parameters": [
                        { "in": "path", "name": "id", "required": true, "schema": { "type": "integer", "format": "int64" } },
                        { "in": "query", "name": "fields", "required": false, "schema": { "type": "string" } }
                    ],
                    "responses": {
                        "200": {
                            "headers": { "ETag": { "schema": { "type": "string" } } },
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } }
                        },
                        "404": { "content": { "application/problem+json": { "schema": { "type": "object" } } } }
                    }
                } },
                "/v2/orders": { "post": {
                    "requestBody": { "required": true, "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Order" } } } },
                    "responses": { "204": {} }
                } }
            },
            "components": { "schemas": {
                "User": { "type": "object", "required": ["id", "name", "role"], "properties": {
                    "id": { "type": "integer", "format": "int64" },
                    "name": { "type": "string" },
                    "nickname": { "type": "string" },
                    "role": { "$ref": "#/components/schemas/Role" },
                    "friends": { "type": "array", "items": { "$ref": "#/components/schemas/User" } }
                } },
                "Role": { "type": "string", "enum": ["user", "admin"] },
                "Order": { "type": "object", "additionalProperties": false, "required": ["item"], "properties": {
                    "item": { "type": "string" },
                    "remember": { "type": "boolean" },
                    "scope": { "type": "string", "enum": ["read", "write"] }
                } }
            } }
        })
    }

    fn changes(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut new = base();
        edit(&mut new);
        let mut found: Vec<String> = breaking_changes(&base(), &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        found.sort();
        found
    }

    fn assert_one(found: Vec<String>, expected: &str) {
        assert_eq!(found, [expected], "expected exactly: {expected}");
    }

    #[test]
    fn the_same_document_has_no_breaking_change() {
        assert!(changes(|_| {}).is_empty());
    }

    #[test]
    fn additions_and_relaxations_are_not_breaking() {
        let found = changes(|doc| {
            let schemas = &mut doc["components"]["schemas"];
            schemas["User"]["properties"]["email"] = json!({ "type": "string" });
            schemas["Order"]["properties"]["otp"] = json!({ "type": "string" });
            schemas["Order"]["required"] = json!([]);
            schemas["Order"]["properties"]["scope"]["enum"] = json!(["read", "write", "admin"]);
            schemas["Role"]["enum"] = json!(["user"]);
            doc["paths"]["/v2/health"] = json!({ "get": { "responses": { "200": {} } } });
            let user = &mut doc["paths"]["/v2/users/{id}"]["get"];
            user["parameters"][1]["description"] = json!("Which fields to return.");
            user["parameters"].as_array_mut().unwrap().push(
                json!({ "in": "query", "name": "expand", "required": false, "schema": { "type": "boolean" } }),
            );
            user["responses"].as_object_mut().unwrap().remove("404");
            user["responses"]["201"] = json!({});
            // A path parameter renamed is the same path to a client.
            let item = doc["paths"]
                .as_object_mut()
                .unwrap()
                .remove("/v2/users/{id}")
                .unwrap();
            doc["paths"]["/v2/users/{user_id}"] = item;
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_removed_path_or_operation_is_breaking() {
        let found = changes(|doc| {
            doc["paths"]
                .as_object_mut()
                .unwrap()
                .remove("/v2/users/{id}");
        });
        assert_one(found, "/v2/users/{id}: the path was removed");
        let found = changes(|doc| {
            doc["paths"]["/v2/orders"] =
                json!({ "put": doc["paths"]["/v2/orders"]["post"].clone() });
        });
        assert_one(found, "POST /v2/orders: the operation was removed");
    }

    #[test]
    fn a_removed_response_field_is_breaking() {
        let found = changes(|doc| {
            let user = &mut doc["components"]["schemas"]["User"];
            user["properties"]
                .as_object_mut()
                .unwrap()
                .remove("nickname");
        });
        assert_one(
            found,
            "GET /v2/users/{id} 200 application/json: nickname: the field was removed",
        );
    }

    #[test]
    fn a_response_field_that_may_be_missing_or_null_is_breaking() {
        let found = changes(|doc| {
            let user = &mut doc["components"]["schemas"]["User"];
            user["required"] = json!(["id", "role"]);
            user["properties"]["id"]["nullable"] = json!(true);
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} 200 application/json: id: may now be null",
                "GET /v2/users/{id} 200 application/json: name: may now be absent",
            ]
        );
    }

    #[test]
    fn a_new_required_request_field_is_breaking() {
        let found = changes(|doc| {
            let order = &mut doc["components"]["schemas"]["Order"];
            order["properties"]["otp"] = json!({ "type": "string" });
            order["required"] = json!(["item", "otp", "remember"]);
        });
        assert_eq!(
            found,
            [
                "POST /v2/orders request body application/json: otp: a new required field",
                "POST /v2/orders request body application/json: remember: now required",
            ]
        );
    }

    #[test]
    fn a_closed_request_body_that_drops_a_field_is_breaking() {
        let found = changes(|doc| {
            let order = &mut doc["components"]["schemas"]["Order"];
            order["properties"]
                .as_object_mut()
                .unwrap()
                .remove("remember");
        });
        assert_one(
            found,
            "POST /v2/orders request body application/json: remember: no longer accepted",
        );
    }

    #[test]
    fn a_changed_type_or_format_is_breaking_anywhere() {
        let found = changes(|doc| {
            let user = &mut doc["components"]["schemas"]["User"];
            user["properties"]["id"]["type"] = json!("string");
            user["properties"]["id"]
                .as_object_mut()
                .unwrap()
                .remove("format");
            doc["components"]["schemas"]["Order"]["properties"]["remember"]["type"] =
                json!("string");
            doc["paths"]["/v2/users/{id}"]["get"]["parameters"][0]["schema"]["format"] =
                json!("int32");
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} 200 application/json: id: type changed from integer to string",
                "GET /v2/users/{id} path parameter id: format changed from int64 to int32",
                "POST /v2/orders request body application/json: remember: type changed from boolean to string",
            ]
        );
    }

    #[test]
    fn a_changed_type_inside_an_array_is_found() {
        let found = changes(|doc| {
            let user = &mut doc["components"]["schemas"]["User"];
            user["properties"]["friends"]["items"] = json!({ "type": "string" });
        });
        assert_one(
            found,
            "GET /v2/users/{id} 200 application/json: friends[]: type changed from object to string",
        );
    }

    #[test]
    fn enums_may_not_lose_request_values_or_gain_response_values() {
        let found = changes(|doc| {
            let schemas = &mut doc["components"]["schemas"];
            schemas["Order"]["properties"]["scope"]["enum"] = json!(["read"]);
            schemas["Role"]["enum"] = json!(["user", "admin", "owner"]);
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} 200 application/json: role: may now be \"owner\"",
                "POST /v2/orders request body application/json: scope: no longer accepts \"write\"",
            ]
        );
    }

    #[test]
    fn new_required_parameters_and_bodies_are_breaking() {
        let found = changes(|doc| {
            let user = &mut doc["paths"]["/v2/users/{id}"]["get"];
            user["parameters"][1]["required"] = json!(true);
            user["parameters"].as_array_mut().unwrap().push(
                json!({ "in": "header", "name": "X-Tenant", "required": true, "schema": { "type": "string" } }),
            );
            user["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": {} } } });
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} header parameter X-Tenant: a new required parameter",
                "GET /v2/users/{id} query parameter fields: now required",
                "GET /v2/users/{id} request body: a request body is now required",
            ]
        );
    }

    #[test]
    fn removed_success_responses_media_types_and_headers_are_breaking() {
        let found = changes(|doc| {
            let responses = &mut doc["paths"]["/v2/users/{id}"]["get"]["responses"];
            responses["200"]["headers"] = json!({});
            let content = responses["200"]["content"].as_object_mut().unwrap();
            let json_content = content.remove("application/json").unwrap();
            content.insert("application/xml".into(), json_content);
            let order = &mut doc["paths"]["/v2/orders"]["post"]["responses"];
            order.as_object_mut().unwrap().remove("204");
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} 200 application/json: this media type is no longer returned",
                "GET /v2/users/{id} 200: the ETag header was removed",
                "POST /v2/orders 204: this response was removed",
            ]
        );
    }

    /// Found writing the openapi_compat fuzz target: a document compared with
    /// itself reported changes when two of its paths differed only in
    /// their parameters' names, or an operation listed a parameter twice.
    #[test]
    fn an_ambiguous_document_compared_with_itself_reports_nothing() {
        let mut doc = base();
        doc["paths"]["/v2/users/{name}"] = json!({ "get": { "responses": {} } });
        doc["paths"]["/v2/users/{id}"]["get"]["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "in": "query", "name": "fields", "required": true, "schema": { "type": "integer" } }));
        assert_eq!(breaking_changes(&doc, &doc), []);
    }

    #[test]
    fn a_request_value_that_was_free_and_is_now_restricted_is_breaking() {
        let found = changes(|doc| {
            doc["paths"]["/v2/users/{id}"]["get"]["parameters"][1]["schema"]["enum"] =
                json!(["all"]);
        });
        assert_one(
            found,
            "GET /v2/users/{id} query parameter fields: only some values are accepted now",
        );
    }
}
