//! Prometheus metrics: what this process counts ([`Metrics`]), how numbers
//! from several processes add up ([`Snapshot`]) and where workers leave them
//! for each other ([`shared::SharedDir`]). `GET /metrics` serves the total;
//! docs/observability.md lists every metric.

pub mod shared;
mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use poem::http::Method;

pub use snapshot::{Histogram, Kind, Snapshot, Value};

use shared::SharedDir;

use crate::telemetry;

/// What `GET /metrics` answers with: the text format Prometheus scrapes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The route label of a request no route matched, so that scanners probing
/// random paths cannot make a series each.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route label of a request dropped because its client left before the
/// answer (a 499): the layer that drops it sits outside the route's own.
pub const ABANDONED_ROUTE: &str = "abandoned";

/// The method label: HTTP's own methods by name, any other as `other`. A
/// client may send any token as a method, and each would otherwise make new
/// series for as long as the process lives.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// A counter with one label, declared beside the code that counts it.
pub struct CounterFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
}

impl Snapshot {
    /// Adds `by` to `family{label="value"}`.
    pub fn count(&mut self, family: &CounterFamily, value: &str, by: u64) {
        let labels = [(family.label, value)];
        let number = Value::Number(by as f64);
        self.add(family.name, family.help, Kind::Counter, &labels, number);
    }
}

/// Requests that hit a dependency failure: answered 503, or let through
/// without a check that needed it (the per-address rate limit).
pub const DEPENDENCY_ERRORS: CounterFamily = CounterFamily {
    name: "dependency_errors_total",
    help: "Requests during which a dependency failed or did not answer in time.",
    label: "dependency",
};

/// Requests refused with 429, by route.
pub const RATE_LIMITED: CounterFamily = CounterFamily {
    name: "rate_limit_rejections_total",
    help: "Requests refused with 429 by a rate limit.",
    label: "route",
};

/// Put in a response's extensions by code that met a failing dependency, so
/// the request is counted under [`DEPENDENCY_ERRORS`].
#[derive(Debug, Clone, Copy)]
pub struct DependencyFailed(pub &'static str);

/// This process's numbers. Cheap to clone: every clone counts into the same
/// place.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: Mutex<HashMap<RequestKey, Histogram>>,
    in_flight: AtomicI64,
    /// Requests started since this process began.
    started: AtomicU64,
    /// Connections closed since this process began.
    closed: AtomicU64,
    /// Keyed by family name and label value.
    counters: Mutex<HashMap<(&'static str, String), Counted>>,
    shared: OnceLock<(SharedDir, String)>,
}

struct Counted {
    family: &'static CounterFamily,
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestKey {
    method: &'static str,
    route: Arc<str>,
    status: u16,
}

impl Metrics {
    /// Counts a request as started; the guard counts it as finished when
    /// dropped, also when the client went away mid-request.
    pub fn start_request(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        self.inner.started.fetch_add(1, Ordering::Relaxed);
        InFlight {
            metrics: self.clone(),
        }
    }

    /// Requests started since this process began: whether it has been
    /// quiet, for the worker's memory upkeep.
    pub(crate) fn requests_started(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// Counts a client connection as closed.
    pub(crate) fn close_connection(&self) {
        self.inner.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed since this process began: idle keep-alive
    /// connections close long after the last request, and free their
    /// buffers then (the worker's memory upkeep).
    pub(crate) fn connections_closed(&self) -> u64 {
        self.inner.closed.load(Ordering::Relaxed)
    }

    pub fn observe_request(&self, method: &Method, route: Arc<str>, status: u16, took: Duration) {
        let key = RequestKey {
            method: method_label(method),
            route,
            status,
        };
        let mut requests = lock(&self.inner.requests);
        requests
            .entry(key)
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Adds one to `family{label="value"}`.
    pub fn count(&self, family: &'static CounterFamily, value: &str) {
        let mut counters = lock(&self.inner.counters);
        counters
            .entry((family.name, value.to_owned()))
            .or_insert(Counted { family, count: 0 })
            .count += 1;
    }

    /// Makes `family`'s series for `values` exist at 0, so that dashboards
    /// and `rate()` see them before the first event.
    pub fn declare(&self, family: &'static CounterFamily, values: &[&str]) {
        let mut counters = lock(&self.inner.counters);
        for value in values {
            counters
                .entry((family.name, (*value).to_owned()))
                .or_insert(Counted { family, count: 0 });
        }
    }

    /// Tells this process where the other processes' numbers are, and the
    /// name its own go by there. Only the first call counts.
    pub fn share_through(&self, dir: SharedDir, owner: String) {
        let _ = self.inner.shared.set((dir, owner));
    }

    pub fn shared(&self) -> Option<&(SharedDir, String)> {
        self.inner.shared.get()
    }

    /// This process's numbers now.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (key, histogram) in lock(&self.inner.requests).iter() {
            let status = key.status.to_string();
            let labels = [
                ("method", key.method),
                ("route", &*key.route),
                ("status", status.as_str()),
            ];
            snapshot.add(
                "http_requests_total",
                "Requests answered, by method, route template and status.",
                Kind::Counter,
                &labels,
                Value::Number(histogram.count() as f64),
            );
            snapshot.add(
                "http_request_duration_seconds",
                "Time to answer a request, by method, route template and status.",
                Kind::Histogram,
                &labels,
                Value::Histogram(histogram.clone()),
            );
        }
        snapshot.add(
            "http_requests_in_flight",
            "Requests being handled right now.",
            Kind::Gauge,
            &[],
            Value::Number(self.inner.in_flight.load(Ordering::Relaxed) as f64),
        );
        // Kept by the exporter (a process-wide count, as its thread is);
        // 0 when traces are off, so dashboards see the series either way.
        snapshot.add(
            "otel_spans_dropped_total",
            "Trace spans dropped: the export queue was full, or the receiver failed or did not answer in time.",
            Kind::Counter,
            &[],
            Value::Number(telemetry::dropped_spans() as f64),
        );
        snapshot.add(
            "log_lines_dropped_total",
            "Log lines dropped: 4 MiB of lines were waiting to be written, stderr not being read.",
            Kind::Counter,
            &[],
            Value::Number(telemetry::dropped_log_lines() as f64),
        );
        for ((_, value), counted) in lock(&self.inner.counters).iter() {
            snapshot.count(counted.family, value, counted.count);
        }
        snapshot
    }
}

/// A request being handled; see [`Metrics::start_request`].
pub struct InFlight {
    metrics: Metrics,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A poisoned lock only means another thread panicked while counting; the
/// numbers are still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_method_route_and_status() {
        let metrics = Metrics::default();
        let route: Arc<str> = "/v1/hello".into();
        for _ in 0..3 {
            let took = Duration::from_millis(2);
            metrics.observe_request(&Method::GET, route.clone(), 200, took);
        }
        metrics.observe_request(&Method::GET, route, 503, Duration::from_secs(1));
        let snapshot = metrics.snapshot();
        let series = |status| {
            [
                ("method", "GET"),
                ("route", "/v1/hello"),
                ("status", status),
            ]
        };
        assert_eq!(
            snapshot.number("http_requests_total", &series("200")),
            Some(3.0)
        );
        assert_eq!(
            snapshot.number("http_requests_total", &series("503")),
            Some(1.0)
        );
    }

    #[test]
    fn in_flight_falls_when_the_guard_goes() {
        let metrics = Metrics::default();
        let in_flight = || metrics.snapshot().number("http_requests_in_flight", &[]);
        let first = metrics.start_request();
        let second = metrics.start_request();
        assert_eq!(in_flight(), Some(2.0));
        drop(first);
        drop(second);
        assert_eq!(in_flight(), Some(0.0));
    }

    #[test]
    fn declared_counters_start_at_zero_and_count_up() {
        let metrics = Metrics::default();
        metrics.declare(&RATE_LIMITED, &["/orders"]);
        let rejected = || {
            let snapshot = metrics.snapshot();
            snapshot.number(RATE_LIMITED.name, &[("route", "/orders")])
        };
        assert_eq!(rejected(), Some(0.0));
        metrics.count(&RATE_LIMITED, "/orders");
        assert_eq!(rejected(), Some(1.0));
    }
}
