//! Breaking changes between two OpenAPI documents of one API: what a client
//! written against the old document could trip over when served the new.
//!
//! The rule, everywhere: a request must not accept less than it did, a
//! response must not promise less than it did. Breaking:
//!
//! - a removed path or operation; a success status, response media type,
//!   response header or response field removed; a response field that may
//!   now be absent or null; a new value in a response enum;
//! - a new required parameter, request body or request field; a request
//!   field, media type or enum value no longer accepted; a request map's
//!   other fields refused (`additionalProperties: false`) where they were
//!   allowed in so many words (left out, it is not taken as a promise);
//! - a changed type or format, anywhere;
//! - tightened request validation: a lower `maxLength`, `maxItems`,
//!   `maxProperties` or `maximum`, a higher `min*` or `minimum`, an
//!   exclusive bound where it was inclusive, a new or changed `pattern`, a
//!   `multipleOf` some old multiples miss, `uniqueItems` turned on; a new
//!   bound where there was none. In responses the mirror image: a bound
//!   raised or dropped, a pattern changed or dropped, `uniqueItems` turned
//!   off, since a strict client checks what it was promised (as with a new
//!   enum value). Tightening a response, or loosening a request, is fine;
//! - security: a requirement on an operation anyone could call, or one that
//!   a client meeting an old alternative no longer meets (another scheme,
//!   more scopes). Removing a requirement is fine;
//! - `oneOf` / `anyOf`: a request alternative removed or tightened, a new
//!   response alternative, or a response alternative loosened. Old and new
//!   alternatives are paired by named schema, then by `type`, then in
//!   order; any pairing is sound (a pair is compared like any two schemas,
//!   an unpaired old request alternative or new response alternative is
//!   reported), and these only make it precise: two inline alternatives of
//!   one type that swap places are reported as changed. A schema that gains
//!   or loses `oneOf` / `anyOf` altogether is reported as "the alternatives
//!   changed", loosening or not.
//!
//! Schemas are compared through `$ref`s, array items, map values
//! (`additionalProperties`) and alternatives, at any depth. A path
//! parameter is matched by its place in the path, not by its name: renaming
//! one is not a change (`/users/{id}` is `/users/{user_id}` to a client).
//!
//! Not checked: many-element `allOf`, `not`, discriminators, a response
//! header's schema, parameters declared on the path item or by `$ref`, a
//! security scheme's own definition (schemes are known by name, so renaming
//! one is reported). `oneOf`'s exclusivity is ignored: loosening one
//! alternative so that a value now matches two is not reported.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::{operations, paths, schema_name};

mod limits;
mod security;

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
    for (path, old_item) in paths(old) {
        let Some((new_path, new_item)) = counterpart(new, path) else {
            diff.report(path, "", "the path was removed");
            continue;
        };
        let paths = Paths {
            old: path,
            new: new_path,
        };
        for (method, old_operation) in operations(old_item) {
            let at = [&method.to_uppercase(), " ", path].concat();
            match new_item.get(method) {
                Some(new_operation) => diff.operation(&at, paths, old_operation, new_operation),
                None => diff.report(&at, "", "the operation was removed"),
            }
        }
    }
    diff.found
}

/// The path of `new` that a client of `path` calls: the same one, or else
/// one that differs only in its parameters' names.
fn counterpart<'a>(new: &'a Value, path: &str) -> Option<(&'a str, &'a Value)> {
    let wanted = shape(path);
    let found = paths(new).find(|(candidate, _)| *candidate == path);
    let found = found.or_else(|| paths(new).find(|(candidate, _)| shape(candidate) == wanted));
    found.map(|(path, item)| (path.as_str(), item))
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

/// The names of a path's parameters, in order, read as [`shape`] finds them:
/// `id` in `/users/{id}`.
fn path_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter(|segment| segment.starts_with('{'))
        .map(|segment| segment.trim_start_matches('{').trim_end_matches('}'))
}

/// One path as the old and the new document spell it.
#[derive(Clone, Copy)]
struct Paths<'a> {
    old: &'a str,
    new: &'a str,
}

impl Paths<'_> {
    /// What the old document called the new document's path parameter
    /// `name`: the one in the same place, since a client fills in places.
    fn old_name<'a>(&'a self, name: &'a str) -> &'a str {
        let place = path_names(self.new).position(|candidate| candidate == name);
        place
            .and_then(|place| path_names(self.old).nth(place))
            .unwrap_or(name)
    }
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

    fn operation(&mut self, at: &str, paths: Paths, old: &Value, new: &Value) {
        self.security(at, old, new);
        self.parameters(at, paths, old, new);
        self.request_body(at, old, new);
        self.responses(at, old, new);
    }

    /// A client that met one of the old alternatives must meet a new one.
    fn security(&mut self, at: &str, old: &Value, new: &Value) {
        let before = security::requirements(self.old, old);
        let after = security::requirements(self.new, new);
        for had in security::no_longer_enough(&before, &after) {
            let needed = security::shown_all(&after);
            let what = if had.is_empty() {
                ["now requires ", &needed].concat()
            } else {
                let had = security::shown(had);
                [&had, " is no longer enough: now requires ", &needed].concat()
            };
            self.report(at, "", what);
        }
    }

    fn parameters(&mut self, at: &str, paths: Paths, old: &Value, new: &Value) {
        let old_parameters = parameters(old);
        for ((place, name), parameter) in parameters(new) {
            let at = [at, " ", place, " parameter ", name].concat();
            let required = parameter["required"] == true;
            let old_name = match place {
                "path" => paths.old_name(name),
                _ => name,
            };
            match old_parameters
                .iter()
                .find(|(key, _)| *key == (place, old_name))
            {
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
        self.limits(at, field, old, new, direction);
        self.properties(at, field, old, new, direction);
        if old.get("items").is_some() && new.get("items").is_some() {
            let field = [field, "[]"].concat();
            self.schema(at, &field, &old["items"], &new["items"], direction);
        }
        self.map_values(at, field, old, new, direction);
        for keyword in ["oneOf", "anyOf"] {
            self.alternatives(at, field, keyword, old, new, direction);
        }
    }

    /// Lengths, ranges, patterns: a request must not refuse what it
    /// allowed; a response must not send what it promised not to, because
    /// a strict client checks what it was promised (as with enums).
    fn limits(&mut self, at: &str, field: &str, old: &Value, new: &Value, direction: Direction) {
        let keywords = match direction {
            Direction::Request => limits::narrowed(old, new),
            Direction::Response => limits::narrowed(new, old),
        };
        for keyword in keywords {
            let before = limits::describe(keyword, old);
            let after = limits::describe(keyword, new);
            let what = [keyword, " changed from ", &before, " to ", &after].concat();
            self.report(at, field, what);
        }
    }

    /// A map's values (`additionalProperties`), as `field.*`: compared like
    /// fields, and in a request no longer accepted at all when now `false`.
    fn map_values(
        &mut self,
        at: &str,
        field: &str,
        old: &Value,
        new: &Value,
        direction: Direction,
    ) {
        if old.get("additionalProperties").is_none() && new.get("additionalProperties").is_none() {
            return;
        }
        let field = [field, ".*"].concat();
        match (map_values(old), map_values(new)) {
            (Some(old_values), Some(new_values)) => {
                self.schema(at, &field, old_values, new_values, direction);
            }
            // Only when other fields were allowed in so many words: most
            // documents leave it out, and clients do not send what is not
            // described.
            (Some(_), None)
                if direction == Direction::Request && old.get("additionalProperties").is_some() =>
            {
                self.report(at, &field, "no longer accepted");
            }
            _ => {}
        }
    }

    /// `oneOf` or `anyOf`: each old request alternative must still be
    /// accepted by a new one, each new response alternative must be one a
    /// client knew. Alternatives are paired (see [`pair_up`]) and each pair
    /// compared like any two schemas; one left over is reported when it
    /// matters. A schema that gains or loses the keyword cannot be paired
    /// up that way, so that is reported whichever the direction.
    fn alternatives(
        &mut self,
        at: &str,
        field: &str,
        keyword: &str,
        old: &Value,
        new: &Value,
        direction: Direction,
    ) {
        let (old_list, new_list) = match (old[keyword].as_array(), new[keyword].as_array()) {
            (None, None) => return,
            (Some(old_list), Some(new_list)) => (old_list, new_list),
            (Some(_), None) => {
                let what = ["the alternatives changed: ", keyword, " was removed"].concat();
                return self.report(at, field, what);
            }
            (None, Some(_)) => {
                let what = ["the alternatives changed: ", keyword, " was added"].concat();
                return self.report(at, field, what);
            }
        };
        let pairs = pair_up(
            &identities(self.old, old_list),
            &identities(self.new, new_list),
        );
        for pair in pairs {
            match (pair, direction) {
                ((Some(i), Some(j)), _) => {
                    let label = alternative(self.old, keyword, old_list, i);
                    let field = [field, ".", &label].concat();
                    self.schema(at, &field, &old_list[i], &new_list[j], direction);
                }
                ((Some(i), None), Direction::Request) => {
                    let label = alternative(self.old, keyword, old_list, i);
                    self.report(at, field, [&label, " is no longer accepted"].concat());
                }
                ((None, Some(j)), Direction::Response) => {
                    let label = alternative(self.new, keyword, new_list, j);
                    self.report(at, field, ["may now be the new ", &label].concat());
                }
                // A request alternative more, or a response one fewer.
                _ => {}
            }
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

/// Each parameter by where it goes and its name; of two with the same, the
/// first (a valid document has no such pair).
fn parameters(operation: &Value) -> Vec<((&str, &str), &Value)> {
    let list = operation["parameters"].as_array().into_iter().flatten();
    let mut found: Vec<((&str, &str), &Value)> = Vec::new();
    for parameter in list {
        let (Some(place), Some(name)) = (parameter["in"].as_str(), parameter["name"].as_str())
        else {
            continue;
        };
        if !found.iter().any(|(key, _)| *key == (place, name)) {
            found.push(((place, name), parameter));
        }
    }
    found
}

/// What an alternative is, for pairing: the schema it names, or else its
/// type.
#[derive(Clone, Copy, PartialEq)]
enum Identity<'a> {
    Named(&'a str),
    Typed(&'a Value),
    Unknown,
}

fn identities<'a>(document: &'a Value, alternatives: &'a [Value]) -> Vec<Identity<'a>> {
    let identity = |schema: &'a Value| match resolve(document, schema) {
        (_, Some(name)) => Identity::Named(name),
        (schema, None) => schema
            .get("type")
            .map_or(Identity::Unknown, Identity::Typed),
    };
    alternatives.iter().map(identity).collect()
}

/// Pairs old alternatives with new ones, by index: the same named schema
/// first, then the same type, then the rest in order. Any pairing is sound,
/// since a pair is compared like any two schemas and what is left over is
/// reported; these only make the reports precise. Each old and each new
/// index appears once, paired or alone.
fn pair_up(old: &[Identity], new: &[Identity]) -> Vec<(Option<usize>, Option<usize>)> {
    let mut partner: Vec<Option<usize>> = vec![None; old.len()];
    let mut taken = vec![false; new.len()];
    let named = |identity: &Identity| matches!(identity, Identity::Named(_));
    let typed = |identity: &Identity| matches!(identity, Identity::Typed(_));
    let passes: [&dyn Fn(usize, usize) -> bool; 3] = [
        &|i, j| named(&old[i]) && old[i] == new[j],
        &|i, j| typed(&old[i]) && old[i] == new[j],
        &|_, _| true,
    ];
    for same in passes {
        for (i, slot) in partner.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            if let Some(j) = (0..new.len()).find(|&j| !taken[j] && same(i, j)) {
                *slot = Some(j);
                taken[j] = true;
            }
        }
    }
    let mut pairs: Vec<(Option<usize>, Option<usize>)> = partner
        .into_iter()
        .enumerate()
        .map(|(i, j)| (Some(i), j))
        .collect();
    let alone = taken.iter().enumerate().filter(|(_, taken)| !**taken);
    pairs.extend(alone.map(|(j, _)| (None, Some(j))));
    pairs
}

/// `oneOf[Cat]` for a named alternative, `oneOf[1]` for an inline one.
fn alternative(document: &Value, keyword: &str, alternatives: &[Value], index: usize) -> String {
    match resolve(document, &alternatives[index]) {
        (_, Some(name)) => [keyword, "[", name, "]"].concat(),
        (_, None) => format!("{keyword}[{index}]"),
    }
}

/// The schema of a map's values: `true` or nothing allows any value (the
/// empty schema, which `Null` reads as), `false` none (nothing to compare).
fn map_values(schema: &Value) -> Option<&Value> {
    match schema.get("additionalProperties") {
        None | Some(Value::Bool(true)) => Some(&Value::Null),
        Some(values) if values.is_object() => Some(values),
        Some(_) => None,
    }
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

    /// A small API: look a user up (anyone may), place an order (signed in).
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
                    "security": [{ "KeyAuth": [] }],
                    "requestBody": { "required": true, "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Order" } } } },
                    "responses": { "204": {} }
                } }
            },
            "components": {
                "schemas": {
                    "User": { "type": "object", "required": ["id", "name", "role"], "properties": {
                        "id": { "type": "integer", "format": "int64" },
                        "name": { "type": "string", "maxLength": 64, "pattern": "^\\S" },
                        "nickname": { "type": "string" },
                        "role": { "$ref": "#/components/schemas/Role" },
                        "friends": { "type": "array", "items": { "$ref": "#/components/schemas/User" } },
                        "score": { "type": "number", "minimum": 0, "maximum": 10 },
                        "contact": { "anyOf": [{ "type": "string", "maxLength": 100 }, { "type": "integer" }] }
                    } },
                    "Role": { "type": "string", "enum": ["user", "admin"] },
                    "Order": { "type": "object", "additionalProperties": false, "required": ["item"], "properties": {
                        "item": { "type": "string", "maxLength": 100, "pattern": "^[a-z]+$" },
                        "remember": { "type": "boolean" },
                        "scope": { "type": "string", "enum": ["read", "write"] },
                        "quantity": { "type": "integer", "minimum": 1, "maximum": 100, "multipleOf": 2 },
                        "tags": { "type": "array", "maxItems": 10, "items": { "type": "string", "maxLength": 20 } },
                        "notes": { "type": "object", "additionalProperties": { "type": "string", "maxLength": 200 } },
                        "payment": { "oneOf": [
                            { "$ref": "#/components/schemas/Card" },
                            { "$ref": "#/components/schemas/Voucher" }
                        ] },
                        "reference": { "anyOf": [{ "type": "string" }, { "type": "integer" }] }
                    } },
                    "Card": { "type": "object", "required": ["number"], "properties": {
                        "number": { "type": "string", "maxLength": 19 }
                    } },
                    "Voucher": { "type": "object", "required": ["code"], "properties": {
                        "code": { "type": "string" }
                    } }
                },
                "securitySchemes": {
                    "KeyAuth": { "type": "http", "scheme": "basic" },
                    "AdminAuth": { "type": "http", "scheme": "basic" },
                    "OAuth": { "type": "oauth2", "flows": {} }
                }
            }
        })
    }

    fn changes(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut new = base();
        edit(&mut new);
        compare(&base(), &new)
    }

    fn compare(old: &Value, new: &Value) -> Vec<String> {
        let mut found: Vec<String> = breaking_changes(old, new)
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
        let found = changes(|doc| {
            let order = &mut doc["components"]["schemas"]["Order"];
            order["properties"]["notes"]["additionalProperties"] = json!(false);
        });
        assert_one(
            found,
            "POST /v2/orders request body application/json: notes.*: no longer accepted",
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

    const ORDERS: &str = "POST /v2/orders request body application/json";
    const USER: &str = "GET /v2/users/{id} 200 application/json";

    #[test]
    fn a_tightened_request_length_or_count_is_breaking() {
        let found = changes(|doc| {
            let order = &mut doc["components"]["schemas"]["Order"]["properties"];
            order["item"]["maxLength"] = json!(64);
            order["item"]["minLength"] = json!(2);
            order["tags"]["maxItems"] = json!(5);
            order["tags"]["minItems"] = json!(1);
            order["tags"]["items"]["maxLength"] = json!(10);
            order["notes"]["maxProperties"] = json!(5);
            order["notes"]["additionalProperties"]["maxLength"] = json!(100);
            let user = &mut doc["paths"]["/v2/users/{id}"]["get"];
            user["parameters"][1]["schema"]["maxLength"] = json!(10);
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} query parameter fields: maxLength changed from none to 10",
                &format!("{ORDERS}: item: maxLength changed from 100 to 64"),
                &format!("{ORDERS}: item: minLength changed from none to 2"),
                &format!("{ORDERS}: notes.*: maxLength changed from 200 to 100"),
                &format!("{ORDERS}: notes: maxProperties changed from none to 5"),
                &format!("{ORDERS}: tags: maxItems changed from 10 to 5"),
                &format!("{ORDERS}: tags: minItems changed from none to 1"),
                &format!("{ORDERS}: tags[]: maxLength changed from 20 to 10"),
            ]
        );
    }

    #[test]
    fn a_new_or_changed_request_pattern_or_uniqueness_is_breaking() {
        let found = changes(|doc| {
            let order = &mut doc["components"]["schemas"]["Order"]["properties"];
            order["item"]["pattern"] = json!("^[a-z]{2,}$");
            order["tags"]["uniqueItems"] = json!(true);
            let user = &mut doc["paths"]["/v2/users/{id}"]["get"];
            user["parameters"][1]["schema"]["pattern"] = json!("^[a-z,]+$");
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} query parameter fields: pattern changed from none to ^[a-z,]+$",
                &format!("{ORDERS}: item: pattern changed from ^[a-z]+$ to ^[a-z]{{2,}}$"),
                &format!("{ORDERS}: tags: uniqueItems changed from none to true"),
            ]
        );
    }

    #[test]
    fn loosened_request_lengths_counts_patterns_and_uniqueness_are_not_breaking() {
        let found = changes(|doc| {
            let order = &mut doc["components"]["schemas"]["Order"]["properties"];
            let item = order["item"].as_object_mut().unwrap();
            item.remove("maxLength");
            item.remove("pattern");
            item.insert("minLength".into(), json!(0));
            order["tags"]["maxItems"] = json!(20);
            order["tags"]["uniqueItems"] = json!(false);
            order["tags"]["items"]["maxLength"] = json!(30);
            order["notes"]["additionalProperties"] = json!({ "type": "string" });
            order["notes"]["minProperties"] = json!(0);
            doc["components"]["schemas"]["Order"]["additionalProperties"] = json!(true);
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_tightened_request_range_is_breaking() {
        let found = changes(|doc| {
            let quantity = &mut doc["components"]["schemas"]["Order"]["properties"]["quantity"];
            quantity["maximum"] = json!(50);
            quantity["exclusiveMinimum"] = json!(true);
            quantity["multipleOf"] = json!(3);
            let id = &mut doc["paths"]["/v2/users/{id}"]["get"]["parameters"][0]["schema"];
            // OpenAPI 3.1's numeric form.
            id["exclusiveMaximum"] = json!(1000);
            id["multipleOf"] = json!(5);
        });
        assert_eq!(
            found,
            [
                "GET /v2/users/{id} path parameter id: maximum changed from none to below 1000",
                "GET /v2/users/{id} path parameter id: multipleOf changed from none to 5",
                &format!("{ORDERS}: quantity: maximum changed from at most 100 to at most 50"),
                &format!("{ORDERS}: quantity: minimum changed from at least 1 to above 1"),
                &format!("{ORDERS}: quantity: multipleOf changed from 2 to 3"),
            ]
        );
    }

    #[test]
    fn a_loosened_request_range_is_not_breaking() {
        let found = changes(|doc| {
            let quantity = &mut doc["components"]["schemas"]["Order"]["properties"]["quantity"];
            quantity["maximum"] = json!(200);
            quantity["exclusiveMaximum"] = json!(false);
            quantity.as_object_mut().unwrap().remove("minimum");
            // Every multiple of 2 is one of 0.5.
            quantity["multipleOf"] = json!(0.5);
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_loosened_response_limit_is_breaking() {
        let found = changes(|doc| {
            let user = &mut doc["components"]["schemas"]["User"]["properties"];
            user["name"]["maxLength"] = json!(100);
            user["name"].as_object_mut().unwrap().remove("pattern");
            user["score"].as_object_mut().unwrap().remove("maximum");
            user["score"]["minimum"] = json!(-1);
        });
        assert_eq!(
            found,
            [
                format!("{USER}: name: maxLength changed from 64 to 100"),
                format!("{USER}: name: pattern changed from ^\\S to none"),
                format!("{USER}: score: maximum changed from at most 10 to none"),
                format!("{USER}: score: minimum changed from at least 0 to at least -1"),
            ]
        );
    }

    #[test]
    fn a_tightened_response_limit_is_not_breaking() {
        let found = changes(|doc| {
            let user = &mut doc["components"]["schemas"]["User"]["properties"];
            user["name"]["maxLength"] = json!(32);
            user["name"]["minLength"] = json!(1);
            user["nickname"]["pattern"] = json!("^\\S");
            user["score"]["maximum"] = json!(5);
            user["score"]["exclusiveMinimum"] = json!(true);
            user["friends"]["uniqueItems"] = json!(true);
            user["friends"]["maxItems"] = json!(100);
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn security_on_an_operation_anyone_could_call_is_breaking() {
        let found = changes(|doc| {
            doc["paths"]["/v2/users/{id}"]["get"]["security"] = json!([{ "KeyAuth": [] }]);
        });
        assert_one(found, "GET /v2/users/{id}: now requires KeyAuth");
        // The document's requirement holds where an operation has none.
        let found = changes(|doc| {
            doc["security"] = json!([{ "OAuth": ["read"] }, { "AdminAuth": [] }]);
        });
        assert_one(
            found,
            "GET /v2/users/{id}: now requires OAuth (read) or AdminAuth",
        );
    }

    #[test]
    fn a_stricter_security_requirement_is_breaking() {
        let found = changes(|doc| {
            doc["paths"]["/v2/orders"]["post"]["security"] = json!([{ "AdminAuth": [] }]);
        });
        assert_one(
            found,
            "POST /v2/orders: KeyAuth is no longer enough: now requires AdminAuth",
        );
        let found = changes(|doc| {
            doc["paths"]["/v2/orders"]["post"]["security"] =
                json!([{ "KeyAuth": [], "OAuth": ["write"] }]);
        });
        assert_one(
            found,
            "POST /v2/orders: KeyAuth is no longer enough: now requires KeyAuth and OAuth (write)",
        );
        let scoped = |scopes: Value| {
            let mut doc = base();
            doc["paths"]["/v2/orders"]["post"]["security"] = json!([{ "OAuth": scopes }]);
            doc
        };
        let found = compare(&scoped(json!(["read"])), &scoped(json!(["read", "write"])));
        assert_one(
            found,
            "POST /v2/orders: OAuth (read) is no longer enough: now requires OAuth (read, write)",
        );
        assert!(compare(&scoped(json!(["read", "write"])), &scoped(json!(["read"]))).is_empty());
    }

    #[test]
    fn removing_or_widening_security_is_not_breaking() {
        let edits: [fn(&mut Value); 4] = [
            |doc| doc["paths"]["/v2/orders"]["post"]["security"] = json!([]),
            |doc| {
                let post = doc["paths"]["/v2/orders"]["post"].as_object_mut().unwrap();
                post.remove("security");
            },
            |doc| {
                doc["paths"]["/v2/orders"]["post"]["security"] =
                    json!([{ "AdminAuth": [] }, { "KeyAuth": [] }]);
            },
            // Credentials are optional.
            |doc| {
                doc["paths"]["/v2/users/{id}"]["get"]["security"] = json!([{}, { "KeyAuth": [] }]);
            },
        ];
        for edit in edits {
            let found = changes(edit);
            assert!(found.is_empty(), "{found:?}");
        }
    }

    /// Moves the user path to `/v2/users/{user_id}`, its parameter renamed.
    fn rename_user_id(doc: &mut Value) {
        let paths = doc["paths"].as_object_mut().unwrap();
        let mut item = paths.remove("/v2/users/{id}").unwrap();
        item["get"]["parameters"][0]["name"] = json!("user_id");
        paths.insert("/v2/users/{user_id}".into(), item);
    }

    #[test]
    fn a_renamed_path_parameter_is_not_a_change() {
        assert!(changes(rename_user_id).is_empty());
        // Matched by place, so it is still compared.
        let found = changes(|doc| {
            rename_user_id(doc);
            let user_id = &mut doc["paths"]["/v2/users/{user_id}"]["get"]["parameters"][0];
            user_id["schema"]["maximum"] = json!(1000);
        });
        assert_one(
            found,
            "GET /v2/users/{id} path parameter user_id: maximum changed from none to at most 1000",
        );
    }

    #[test]
    fn a_request_alternative_removed_or_tightened_is_breaking() {
        let found = changes(|doc| {
            let schemas = &mut doc["components"]["schemas"];
            let payment = &mut schemas["Order"]["properties"]["payment"]["oneOf"];
            payment.as_array_mut().unwrap().pop();
            let reference = &mut schemas["Order"]["properties"]["reference"]["anyOf"];
            reference.as_array_mut().unwrap().remove(0);
            schemas["Card"]["properties"]["number"]["maxLength"] = json!(16);
        });
        assert_eq!(
            found,
            [
                format!("{ORDERS}: payment.oneOf[Card].number: maxLength changed from 19 to 16"),
                format!("{ORDERS}: payment: oneOf[Voucher] is no longer accepted"),
                format!("{ORDERS}: reference: anyOf[0] is no longer accepted"),
            ]
        );
    }

    #[test]
    fn a_request_alternative_added_reordered_or_loosened_is_not_breaking() {
        let found = changes(|doc| {
            let schemas = &mut doc["components"]["schemas"];
            let order = &mut schemas["Order"]["properties"];
            let payment = order["payment"]["oneOf"].as_array_mut().unwrap();
            payment.insert(0, json!({ "type": "string" }));
            order["reference"]["anyOf"] =
                json!([{ "type": "integer" }, { "type": "boolean" }, { "type": "string" }]);
            schemas["Card"]["properties"]["number"]["maxLength"] = json!(32);
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_new_or_loosened_response_alternative_is_breaking() {
        let found = changes(|doc| {
            let contact = &mut doc["components"]["schemas"]["User"]["properties"]["contact"];
            contact["anyOf"][0]["maxLength"] = json!(200);
            let alternatives = contact["anyOf"].as_array_mut().unwrap();
            alternatives.push(json!({ "type": "boolean" }));
        });
        assert_eq!(
            found,
            [
                format!("{USER}: contact.anyOf[0]: maxLength changed from 100 to 200"),
                format!("{USER}: contact: may now be the new anyOf[2]"),
            ]
        );
    }

    #[test]
    fn a_response_alternative_removed_or_tightened_is_not_breaking() {
        let found = changes(|doc| {
            let contact = &mut doc["components"]["schemas"]["User"]["properties"]["contact"];
            contact["anyOf"] = json!([{ "type": "string", "maxLength": 50 }]);
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn alternatives_that_appear_or_disappear_are_reported_as_changed() {
        let found = changes(|doc| {
            let schemas = &mut doc["components"]["schemas"];
            // Looser, but not known to be: reported either way.
            schemas["Order"]["properties"]["item"] =
                json!({ "oneOf": [{ "type": "string" }, { "type": "integer" }] });
            schemas["User"]["properties"]["contact"] = json!({ "type": "string" });
        });
        assert_eq!(
            found,
            [
                format!("{USER}: contact: the alternatives changed: anyOf was removed"),
                format!("{ORDERS}: item: the alternatives changed: oneOf was added"),
            ]
        );
    }

    #[test]
    fn an_invalid_document_is_still_the_same_as_itself() {
        let mut doc = base();
        // Two parameters of one name, two paths of one shape: each is
        // compared with itself, not with its twin.
        let user = &mut doc["paths"]["/v2/users/{id}"]["get"];
        user["parameters"].as_array_mut().unwrap().push(
            json!({ "in": "query", "name": "fields", "required": true, "schema": { "type": "integer" } }),
        );
        doc["paths"]["/v2/users/{name}"] = json!({ "get": { "responses": { "200": {} } } });
        assert!(compare(&doc, &doc).is_empty());
    }

    mod documents {
        use proptest::prelude::*;
        use proptest::sample::select;
        use serde_json::{json, Map, Value};

        /// Keys that the checker reads, so that arbitrary documents reach
        /// its corners, and some of the values it looks for.
        const KEYS: &str = "type format enum nullable properties required items \
            additionalProperties oneOf anyOf allOf $ref maxLength minLength maxItems minItems \
            maximum minimum exclusiveMaximum exclusiveMinimum multipleOf pattern uniqueItems in \
            name schema parameters requestBody content application/json responses 200 404 \
            headers security KeyAuth get post id x";
        const WORDS: &str = "string integer object path query id x KeyAuth read ^a$ \
            #/components/schemas/A #/components/schemas/B #/components/requestBodies/A";

        fn words(list: &'static str) -> impl Strategy<Value = &'static str> {
            select(list.split_whitespace().collect::<Vec<_>>())
        }

        /// Any JSON, its keys the checker's, with more typed schemas and
        /// alternatives than chance would give.
        fn json_ish() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                (-3i64..300).prop_map(Value::from),
                (-2.0f64..2.0).prop_map(Value::from),
                words(WORDS).prop_map(Value::from),
                words("string integer object").prop_map(|kind| json!({ "type": kind })),
            ];
            leaf.prop_recursive(6, 96, 6, |inner| {
                let list = prop::collection::vec(inner.clone(), 0..4);
                prop_oneof![
                    list.clone().prop_map(Value::from),
                    (words("oneOf anyOf"), list)
                        .prop_map(|(keyword, list)| json!({ keyword: list })),
                    prop::collection::btree_map(words(KEYS), inner, 0..6).prop_map(|entries| {
                        let entries = entries.into_iter().map(|(k, v)| (k.to_owned(), v));
                        Value::Object(entries.collect::<Map<_, _>>())
                    }),
                ]
            })
        }

        /// A security requirement list, or anything.
        fn security() -> impl Strategy<Value = Value> {
            let scopes = prop::collection::vec(words("read write"), 0..3);
            let requirement = prop::collection::btree_map(words("KeyAuth OAuth"), scopes, 0..3);
            let list = prop::collection::vec(requirement, 0..3).prop_map(|list| json!(list));
            prop_oneof![list, json_ish()]
        }

        /// `{"application/json": {"schema": …}}`.
        fn content() -> impl Strategy<Value = Value> {
            json_ish().prop_map(|schema| json!({ "application/json": { "schema": schema } }))
        }

        /// An operation shaped as OpenAPI's, so that schemas are reached,
        /// with anything in its places; or anything at all.
        fn operation() -> impl Strategy<Value = Value> {
            let parameter = (words("path query"), words("id x"), any::<bool>(), json_ish())
                .prop_map(|(place, name, required, schema)| {
                    json!({ "in": place, "name": name, "required": required, "schema": schema })
                });
            let parameters = prop::collection::vec(parameter, 0..3);
            let shaped = (parameters, content(), any::<bool>(), content(), security()).prop_map(
                |(parameters, body, required, returned, security)| {
                    json!({
                        "parameters": parameters,
                        "requestBody": { "required": required, "content": body },
                        "responses": { "200": { "content": returned } },
                        "security": security
                    })
                },
            );
            prop_oneof![3 => shaped, 1 => json_ish()]
        }

        fn document() -> impl Strategy<Value = Value> {
            let path = words("/a /a/{id} /a/{x} /a/{id}/{x} /b/{x}/{id}");
            let operations = prop::collection::btree_map(words("get post"), operation(), 0..3);
            let paths = prop::collection::btree_map(path, operations, 0..4);
            (paths, json_ish(), json_ish(), security()).prop_map(|(paths, a, b, security)| {
                json!({
                    "paths": paths,
                    "security": security,
                    "components": { "schemas": { "A": a, "B": b }, "requestBodies": { "A": b } }
                })
            })
        }

        proptest! {
            #[test]
            fn any_document_is_the_same_as_itself(doc in document(), other in document()) {
                prop_assert_eq!(super::compare(&doc, &doc), Vec::<String>::new());
                // And two different ones may differ, but never panic.
                super::breaking_changes(&doc, &other);
                super::breaking_changes(&other, &doc);
            }
        }
    }
}
