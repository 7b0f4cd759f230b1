//! A process's numbers at one moment, in a form that adds up across
//! processes and renders as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only goes up; a dead worker's count is kept.
    Counter,
    /// A level right now; a dead worker's is dropped.
    Gauge,
    Histogram,
}

/// Observations sorted into buckets by upper bound (the last, implicit one
/// being +Inf), as Prometheus histograms are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// One count a bucket, not cumulative; `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other` in. Histograms with other buckets (from a worker of an
    /// older build, during a reload) cannot be added and are left out.
    fn add(&mut self, other: &Histogram) {
        if other.bounds != self.bounds || other.counts.len() != self.counts.len() {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Histogram(Histogram),
}

impl Value {
    fn add(&mut self, other: &Value) {
        match (self, other) {
            (Value::Number(mine), Value::Number(theirs)) => *mine += theirs,
            (Value::Histogram(mine), Value::Histogram(theirs)) => mine.add(theirs),
            // A family changed kind between builds: keep what is here.
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    pub help: String,
    pub kind: Kind,
    /// By label set, rendered (`method="GET",status="200"`).
    pub series: BTreeMap<String, Value>,
}

/// Metric families by name. Adding two snapshots sums every series they
/// share, which is right for counters, histograms and the gauges used here
/// (in-flight requests, pool connections: totals across processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    families: BTreeMap<String, Family>,
}

impl Snapshot {
    /// Adds `value` to the series `name{labels}`, creating it if need be.
    pub fn add(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        let family = self
            .families
            .entry(name.to_owned())
            .or_insert_with(|| Family {
                help: help.to_owned(),
                kind,
                series: BTreeMap::new(),
            });
        match family.series.entry(render_labels(labels)) {
            std::collections::btree_map::Entry::Occupied(mut series) => {
                series.get_mut().add(&value)
            }
            std::collections::btree_map::Entry::Vacant(series) => {
                series.insert(value);
            }
        }
    }

    /// Sums `other` into this one.
    pub fn merge(&mut self, other: &Snapshot) {
        for (name, theirs) in &other.families {
            match self.families.get_mut(name) {
                Some(mine) if mine.kind == theirs.kind => {
                    for (labels, value) in &theirs.series {
                        match mine.series.get_mut(labels) {
                            Some(existing) => existing.add(value),
                            None => {
                                mine.series.insert(labels.clone(), value.clone());
                            }
                        }
                    }
                }
                Some(_) => {}
                None => {
                    self.families.insert(name.clone(), theirs.clone());
                }
            }
        }
    }

    /// What outlives a process: its counters and histograms, not its gauges.
    pub fn without_gauges(mut self) -> Snapshot {
        self.families.retain(|_, family| family.kind != Kind::Gauge);
        self
    }

    /// One series' number, for tests and checks: `None` if it is absent or
    /// a histogram.
    pub fn number(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self
            .families
            .get(name)?
            .series
            .get(&render_labels(labels))?
        {
            Value::Number(number) => Some(*number),
            Value::Histogram(_) => None,
        }
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                match value {
                    Value::Number(number) => {
                        let _ = writeln!(out, "{name}{} {number}", braced(labels));
                    }
                    Value::Histogram(histogram) => {
                        render_histogram(&mut out, name, labels, histogram)
                    }
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let with_le = |le: &str| {
        let le = format!("le=\"{le}\"");
        if labels.is_empty() {
            braced(&le)
        } else {
            braced(&[labels, ",", &le].concat())
        }
    };
    let mut cumulative = 0;
    for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            with_le(&bound.to_string())
        );
    }
    let total = histogram.count();
    let _ = writeln!(out, "{name}_bucket{} {total}", with_le("+Inf"));
    let _ = writeln!(out, "{name}_sum{} {}", braced(labels), histogram.sum);
    let _ = writeln!(out, "{name}_count{} {total}", braced(labels));
}

fn braced(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        // Not format!: doubled braces would read as Liquid to cargo-generate.
        ["{", labels, "}"].concat()
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape_label(value));
    }
    out
}

/// Label values may hold anything; the format escapes `\`, `"` and newlines.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(snapshot: &mut Snapshot, labels: &[(&str, &str)], by: f64) {
        snapshot.add(
            "jobs_total",
            "Jobs.",
            Kind::Counter,
            labels,
            Value::Number(by),
        );
    }

    #[test]
    fn merging_sums_shared_series_and_keeps_the_rest() {
        let mut one = Snapshot::default();
        counter(&mut one, &[("outcome", "ok")], 2.0);
        counter(&mut one, &[("outcome", "failed")], 1.0);
        let mut two = Snapshot::default();
        counter(&mut two, &[("outcome", "ok")], 5.0);
        one.merge(&two);
        assert_eq!(one.number("jobs_total", &[("outcome", "ok")]), Some(7.0));
        assert_eq!(
            one.number("jobs_total", &[("outcome", "failed")]),
            Some(1.0)
        );
    }

    #[test]
    fn gauges_do_not_outlive_their_process() {
        let mut snapshot = Snapshot::default();
        counter(&mut snapshot, &[], 3.0);
        snapshot.add("busy", "Busy.", Kind::Gauge, &[], Value::Number(4.0));
        let kept = snapshot.without_gauges();
        assert_eq!(kept.number("jobs_total", &[]), Some(3.0));
        assert_eq!(kept.number("busy", &[]), None);
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let mut histogram = Histogram::new(&[0.25, 1.0]);
        // Bounds are inclusive: 0.25 goes in the first bucket.
        for value in [0.125, 0.25, 0.5, 3.0] {
            histogram.observe(value);
        }
        let mut snapshot = Snapshot::default();
        let labels = [("route", "/x")];
        snapshot.add(
            "t_seconds",
            "T.",
            Kind::Histogram,
            &labels,
            Value::Histogram(histogram),
        );
        let text = snapshot.render();
        for line in [
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{route=\"/x\",le=\"0.25\"} 2",
            "t_seconds_bucket{route=\"/x\",le=\"1\"} 3",
            "t_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4",
            "t_seconds_sum{route=\"/x\"} 3.875",
            "t_seconds_count{route=\"/x\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut snapshot = Snapshot::default();
        counter(&mut snapshot, &[("path", "a\"b\\c\nd")], 1.0);
        assert!(snapshot
            .render()
            .contains(r#"jobs_total{path="a\"b\\c\nd"} 1"#));
    }

    #[test]
    fn snapshots_survive_a_round_trip_through_json() {
        let mut snapshot = Snapshot::default();
        counter(&mut snapshot, &[("outcome", "ok")], 2.0);
        let mut histogram = Histogram::new(&[1.0]);
        histogram.observe(0.5);
        snapshot.add("h", "H.", Kind::Histogram, &[], Value::Histogram(histogram));
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snapshot);
    }
}
