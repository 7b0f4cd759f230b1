//! Security requirements: who may call an operation. A requirement list is
//! alternatives (any one will do), each a set of schemes that must all be
//! met, each scheme with the scopes it needs. A client that met one of the
//! old alternatives must meet one of the new.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Schemes, each with its scopes, all needed at once. Empty: anyone.
pub type Requirement<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// What calling `operation` takes: its own `security`, or else the
/// document's. No list, or an empty one, lets anyone in, as does an empty
/// alternative (`[{}]`, "optional").
pub fn requirements<'a>(document: &'a Value, operation: &'a Value) -> Vec<Requirement<'a>> {
    let list = operation["security"]
        .as_array()
        .or_else(|| document["security"].as_array());
    let alternatives: Vec<Requirement> = list
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|alternative| {
            alternative
                .iter()
                .map(|(scheme, scopes)| (scheme.as_str(), scope_set(scopes)))
                .collect()
        })
        .collect();
    if alternatives.is_empty() {
        vec![Requirement::new()]
    } else {
        alternatives
    }
}

fn scope_set(scopes: &Value) -> BTreeSet<&str> {
    let scopes = scopes.as_array().into_iter().flatten();
    scopes.filter_map(Value::as_str).collect()
}

/// The old alternatives that meet none of the new: the clients that relied
/// on one of them are now refused.
pub fn no_longer_enough<'o>(
    old: &'o [Requirement<'o>],
    new: &[Requirement],
) -> Vec<&'o Requirement<'o>> {
    old.iter()
        .filter(|had| !new.iter().any(|needed| meets(had, needed)))
        .collect()
}

/// Whether a client with `had` meets `needed`: every scheme needed, with
/// every scope needed.
fn meets(had: &Requirement, needed: &Requirement) -> bool {
    needed.iter().all(|(scheme, scopes)| {
        had.get(scheme)
            .is_some_and(|granted| scopes.is_subset(granted))
    })
}

/// `AdminAuth`, `OAuth (read, write) and ApiKey`, `nothing`.
pub fn shown(requirement: &Requirement) -> String {
    if requirement.is_empty() {
        return "nothing".to_owned();
    }
    let schemes: Vec<String> = requirement
        .iter()
        .map(|(scheme, scopes)| {
            if scopes.is_empty() {
                return (*scheme).to_owned();
            }
            let scopes: Vec<&str> = scopes.iter().copied().collect();
            format!("{scheme} ({})", scopes.join(", "))
        })
        .collect();
    schemes.join(" and ")
}

/// Every alternative, joined with "or".
pub fn shown_all(requirements: &[Requirement]) -> String {
    let alternatives: Vec<String> = requirements.iter().map(shown).collect();
    alternatives.join(" or ")
}
