//! The validation keywords of two schemas (lengths, counts, ranges,
//! `multipleOf`, `pattern`, `uniqueItems`), compared: in which of them one
//! schema refuses a value the other allows. Requests ask it one way round
//! (does the new schema refuse what the old allowed?), responses the other
//! (does the new schema allow what the old refused?).

use serde_json::Value;

/// Upper bounds on a count: a lower one, or a new one, refuses values.
const MAXIMUM_COUNTS: [&str; 3] = ["maxLength", "maxItems", "maxProperties"];
/// Lower bounds on a count: absent is 0.
const MINIMUM_COUNTS: [&str; 3] = ["minLength", "minItems", "minProperties"];

/// The keywords in which `to` refuses a value that `from` allows, in a
/// fixed order. `maximum` and `minimum` stand for the whole bound, their
/// `exclusive*` forms included.
pub fn narrowed(from: &Value, to: &Value) -> Vec<&'static str> {
    let mut keywords = Vec::new();
    for keyword in MAXIMUM_COUNTS {
        let bound = |schema: &Value| schema[keyword].as_f64().map(Bound::inclusive);
        if lowered(bound(from), bound(to)) {
            keywords.push(keyword);
        }
    }
    for keyword in MINIMUM_COUNTS {
        // A lower bound is an upper bound on the negated value, so one
        // comparison serves both sides.
        let bound =
            |schema: &Value| Some(Bound::inclusive(-schema[keyword].as_f64().unwrap_or(0.0)));
        if lowered(bound(from), bound(to)) {
            keywords.push(keyword);
        }
    }
    if lowered(maximum(from), maximum(to)) {
        keywords.push("maximum");
    }
    if lowered(minimum(from), minimum(to)) {
        keywords.push("minimum");
    }
    if fewer_multiples(from, to) {
        keywords.push("multipleOf");
    }
    // Two patterns cannot be compared: a different one may refuse anything.
    if to.get("pattern").is_some() && from.get("pattern") != to.get("pattern") {
        keywords.push("pattern");
    }
    if to["uniqueItems"] == true && from["uniqueItems"] != true {
        keywords.push("uniqueItems");
    }
    keywords
}

/// How `schema` states a keyword that [`narrowed`] names, for a report.
pub fn describe(keyword: &str, schema: &Value) -> String {
    let shown = |bound: Option<Bound>, inclusive: &str, exclusive: &str| match bound {
        Some(Bound {
            value,
            exclusive: false,
        }) => format!("{inclusive} {value}"),
        Some(Bound {
            value,
            exclusive: true,
        }) => format!("{exclusive} {value}"),
        None => "none".to_owned(),
    };
    match keyword {
        "maximum" => shown(maximum(schema), "at most", "below"),
        "minimum" => {
            let bound = minimum(schema).map(|bound| Bound {
                value: -bound.value,
                ..bound
            });
            shown(bound, "at least", "above")
        }
        _ => match schema.get(keyword) {
            Some(Value::String(text)) => text.clone(),
            Some(value) => value.to_string(),
            None => "none".to_owned(),
        },
    }
}

/// An upper bound on a value.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    fn inclusive(value: f64) -> Self {
        Bound {
            value,
            exclusive: false,
        }
    }
}

/// Whether the upper bound `to` refuses a value `from` allows (no bound
/// allows everything).
fn lowered(from: Option<Bound>, to: Option<Bound>) -> bool {
    match (from, to) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(from), Some(to)) => {
            to.value < from.value || (to.value == from.value && to.exclusive && !from.exclusive)
        }
    }
}

/// The tighter of two upper bounds.
fn tighter(a: Option<Bound>, b: Option<Bound>) -> Option<Bound> {
    if lowered(a, b) {
        b
    } else {
        a
    }
}

/// `maximum`, exclusive when OpenAPI 3.0's `exclusiveMaximum: true` says so,
/// or OpenAPI 3.1's numeric `exclusiveMaximum`: whichever is tighter.
fn maximum(schema: &Value) -> Option<Bound> {
    upper_bound(schema, "maximum", "exclusiveMaximum", 1.0)
}

/// `minimum` and `exclusiveMinimum` as [`maximum`] reads them, negated: an
/// upper bound on the negated value.
fn minimum(schema: &Value) -> Option<Bound> {
    upper_bound(schema, "minimum", "exclusiveMinimum", -1.0)
}

fn upper_bound(schema: &Value, keyword: &str, exclusive: &str, sign: f64) -> Option<Bound> {
    let stated = schema[keyword].as_f64().map(|value| Bound {
        value: sign * value,
        exclusive: schema[exclusive] == true,
    });
    let numeric = schema[exclusive].as_f64().map(|value| Bound {
        value: sign * value,
        exclusive: true,
    });
    tighter(stated, numeric)
}

/// Whether `to`'s `multipleOf` refuses a multiple of `from`'s: every
/// multiple of `from` is one of `to` exactly when `from / to` is a whole
/// number (10 → 5 refuses nothing; 5 → 10, or none → 5, does).
fn fewer_multiples(from: &Value, to: &Value) -> bool {
    let step = |schema: &Value| schema["multipleOf"].as_f64().filter(|step| *step > 0.0);
    let Some(to) = step(to) else {
        return false;
    };
    let Some(from) = step(from) else {
        return true;
    };
    let ratio = from / to;
    // Decimal steps are not exact in binary: 0.3 / 0.1 is 2.9999999999999996.
    (ratio - ratio.round()).abs() > 1e-9 * ratio.abs().max(1.0)
}
