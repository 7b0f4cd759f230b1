//! Logging through tracing: readable lines for people, JSON lines for
//! machines. And, when an OTLP endpoint is set, traces: each request's
//! span and its PostgreSQL and Redis calls, sent over OTLP/HTTP (protobuf)
//! to a Collector, Jaeger, Tempo or a vendor. docs/observability.md shows
//! the trace's path.
//!
//! With no endpoint nothing of OpenTelemetry is built: no layer, no
//! exporter, no spans beyond the request's log span (see [`enabled`]).

mod export;
mod line;
mod log_queue;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_log::AsLog;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub(crate) use export::DROPPED_SPANS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The target of the PostgreSQL and Redis call spans: only the trace layer
/// takes them, so that a log line inside one still names its request.
const DEPENDENCY_TARGET: &str = "app::dependency";

/// The request span's name (`requests.rs`); the exporter renames it
/// `{method} {route}` once the route is known (`export.rs`).
pub(crate) const REQUEST_SPAN: &str = "request";

/// Whether traces are being built and exported in this process.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The provider, kept to flush it on the way out.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How log lines reach stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// One write(2) per line, on the thread that logs: for commands and
    /// the master, whose lines must be out before they fork or exit.
    Direct,
    /// Through a writer thread that writes whatever lines are waiting in
    /// one write, ten times a second or whenever 64 KiB wait
    /// (`log_queue.rs`). For the processes that serve requests: a write(2)
    /// per access-log line on the request's own thread was the largest
    /// per-request cost left (docs/benchmarks.md).
    Background,
}

/// The log writer thread (`LogOutput::Background`): its queue, for the
/// count of dropped lines, and the handle that stops it, taken by
/// [`flush_logs`].
static LOG_QUEUE: OnceLock<log_queue::LogQueue> = OnceLock::new();
static LOG_FLUSHER: Mutex<Option<log_queue::Flusher>> = Mutex::new(None);

/// Which traces are kept, as the OpenTelemetry SDKs' OTEL_TRACES_SAMPLER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// The OpenTelemetry SDKs' standard variables, as settings: validated,
/// shown by `config check`, and the only source the exporter is built from
/// (the SDK reads no variable behind their back).
#[derive(Debug, Clone, clap::Args)]
pub struct TracingSettings {
    /// Base URL of an OTLP/HTTP receiver (http://collector:4318, or a
    /// vendor's https://...): traces go to its /v1/traces. Unset (and no
    /// traces endpoint): no traces.
    #[arg(
        long = "otel-exporter-otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub endpoint: Option<String>,
    /// The full URL traces are sent to, over the endpoint above.
    #[arg(
        long = "otel-exporter-otlp-traces-endpoint",
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )]
    pub traces_endpoint: Option<String>,
    /// Headers sent with every export, `key=value,key=value`, values
    /// percent-encoded: a vendor's API key (`x-api-key=...`). Secret:
    /// `config check` shows only their names.
    #[arg(
        long = "otel-exporter-otlp-headers",
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        default_value = ""
    )]
    pub headers: String,
    /// Headers for traces only, over those above (same form).
    #[arg(
        long = "otel-exporter-otlp-traces-headers",
        env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        default_value = ""
    )]
    pub traces_headers: String,
    /// PEM file of the CAs an https endpoint's certificate must come from,
    /// in place of the system's (a private Collector's CA).
    #[arg(
        long = "otel-exporter-otlp-certificate",
        env = "OTEL_EXPORTER_OTLP_CERTIFICATE",
        value_name = "PATH"
    )]
    pub certificate: Option<std::path::PathBuf>,
    /// The service's name in the traces (`service.name`). Every worker
    /// exports under it, each with its own `service.instance.id`.
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME", default_value = env!("CARGO_PKG_NAME"))]
    pub service_name: String,
    /// More resource attributes, `key=value,key=value`
    /// (`deployment.environment.name=prod`), values percent-encoded.
    #[arg(
        long = "otel-resource-attributes",
        env = "OTEL_RESOURCE_ATTRIBUTES",
        default_value = ""
    )]
    pub resource_attributes: String,
    /// Which traces to keep. The parent-based ones follow the caller's
    /// sampled flag (nginx's or the client's `traceparent`).
    #[arg(
        long = "otel-traces-sampler",
        env = "OTEL_TRACES_SAMPLER",
        value_enum,
        default_value_t = SamplerKind::ParentBasedAlwaysOn
    )]
    pub sampler: SamplerKind,
    /// The ratio the `*traceidratio` samplers keep, 0 to 1.
    #[arg(
        long = "otel-traces-sampler-arg",
        env = "OTEL_TRACES_SAMPLER_ARG",
        default_value_t = 1.0
    )]
    pub sampler_arg: f64,
    /// The longest one export may take, in milliseconds; past it the batch
    /// is dropped (and counted in otel_spans_dropped_total).
    #[arg(
        long = "otel-exporter-otlp-traces-timeout",
        env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        default_value_t = 5_000
    )]
    pub export_timeout_ms: u64,
    /// Finished spans waiting to be exported, at most; past it new spans
    /// are dropped (and counted) rather than held in memory.
    #[arg(
        long = "otel-bsp-max-queue-size",
        env = "OTEL_BSP_MAX_QUEUE_SIZE",
        default_value_t = 2_048
    )]
    pub max_queue_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("{name}: {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("cannot build the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the span exporter thread")]
    Thread(#[source] std::io::Error),
}

fn invalid(name: &'static str, problem: impl Into<String>) -> TracingError {
    TracingError::Invalid {
        name,
        problem: problem.into(),
    }
}

impl TracingSettings {
    /// Where traces go, if anywhere: the traces endpoint as it is, else the
    /// endpoint with `/v1/traces`, as the specification has it.
    pub fn traces_url(&self) -> Option<String> {
        let set = |value: &Option<String>| value.clone().filter(|value| !value.trim().is_empty());
        set(&self.traces_endpoint).or_else(|| {
            set(&self.endpoint).map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }

    pub fn validate(&self) -> Result<(), TracingError> {
        if let Some(url) = self.traces_url() {
            let uri: poem::http::Uri = url.parse().map_err(|err| {
                invalid("OTEL_EXPORTER_OTLP_ENDPOINT", format!("not a URL ({err})"))
            })?;
            let https = uri.scheme_str() == Some("https");
            if !(https || uri.scheme_str() == Some("http")) || uri.host().is_none() {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "must be http://host[:port] or https://host[:port]",
                ));
            }
            if self.certificate.is_some() && !https {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                    "is for an https endpoint; this one is http://",
                ));
            }
        }
        self.export_headers()?;
        self.roots()?;
        if !(0.0..=1.0).contains(&self.sampler_arg) {
            return Err(invalid("OTEL_TRACES_SAMPLER_ARG", "must lie in 0..=1"));
        }
        if self.export_timeout_ms == 0 {
            return Err(invalid(
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "must be at least 1",
            ));
        }
        if self.max_queue_size == 0 {
            return Err(invalid("OTEL_BSP_MAX_QUEUE_SIZE", "must be at least 1"));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("OTEL_SERVICE_NAME", "must not be empty"));
        }
        resource_attributes(&self.resource_attributes)?;
        Ok(())
    }

    /// `NAME=value` pairs for `config check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let shown = |value: &Option<String>| value.clone().unwrap_or_default();
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", shown(&self.endpoint)),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                shown(&self.traces_endpoint),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", header_names(&self.headers)),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                header_names(&self.traces_headers),
            ),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                self.certificate
                    .as_ref()
                    .map_or_else(String::new, |path| path.display().to_string()),
            ),
            ("OTEL_SERVICE_NAME", self.service_name.clone()),
            ("OTEL_RESOURCE_ATTRIBUTES", self.resource_attributes.clone()),
            (
                "OTEL_TRACES_SAMPLER",
                clap::ValueEnum::to_possible_value(&self.sampler)
                    .map(|value| value.get_name().to_owned())
                    .unwrap_or_default(),
            ),
            ("OTEL_TRACES_SAMPLER_ARG", self.sampler_arg.to_string()),
            (
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                self.export_timeout_ms.to_string(),
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", self.max_queue_size.to_string()),
        ]
    }

    /// The headers every export carries: the general ones, then the
    /// traces' own over them, as the specification merges them.
    pub(crate) fn export_headers(&self) -> Result<HashMap<String, String>, TracingError> {
        let mut headers = HashMap::new();
        for (name, text) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", &self.headers),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &self.traces_headers),
        ] {
            for (key, value) in key_values(name, text)? {
                let valid = poem::http::HeaderName::from_bytes(key.as_bytes()).is_ok()
                    && poem::http::HeaderValue::from_str(&value).is_ok();
                if !valid {
                    return Err(invalid(name, format!("{key:?} is not a valid header")));
                }
                headers.insert(key.to_ascii_lowercase(), value);
            }
        }
        Ok(headers)
    }

    /// The CAs an https endpoint must show a certificate from: the
    /// certificate file's, or none given (the system's).
    pub(crate) fn roots(&self) -> Result<Option<Vec<reqwest::Certificate>>, TracingError> {
        const NAME: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
        let Some(path) = &self.certificate else {
            return Ok(None);
        };
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|err| invalid(NAME, format!("cannot read {shown}: {err}")))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| invalid(NAME, format!("{shown} is not PEM certificates: {err}")))?;
        if roots.is_empty() {
            return Err(invalid(NAME, format!("{shown} holds no certificate")));
        }
        Ok(Some(roots))
    }

    fn sampler(&self) -> Sampler {
        let ratio = Sampler::TraceIdRatioBased(self.sampler_arg);
        match self.sampler {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::TraceIdRatio => ratio,
            SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerKind::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(ratio)),
        }
    }
}

/// `key=value,key=value`, values percent-decoded, as OTEL_RESOURCE_ATTRIBUTES.
fn resource_attributes(text: &str) -> Result<Vec<KeyValue>, TracingError> {
    let pairs = key_values("OTEL_RESOURCE_ATTRIBUTES", text)?;
    Ok(pairs
        .into_iter()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect())
}

/// The W3C-baggage-like lists the OTEL_* variables use: `key=value`
/// pairs separated by commas, values percent-decoded; `name` is the
/// setting's, for the error.
fn key_values(name: &'static str, text: &str) -> Result<Vec<(String, String)>, TracingError> {
    let mut pairs = Vec::new();
    for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid(name, "expected key=value pairs separated by commas"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(name, "a key is empty"));
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| invalid(name, "a value is not UTF-8 once decoded"))?;
        pairs.push((key.to_owned(), value.into_owned()));
    }
    Ok(pairs)
}

/// The headers' names only, for `config check`: their values are keys.
fn header_names(text: &str) -> String {
    let names: Vec<String> = text
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, _)| format!("{}=***", key.trim()))
        .collect();
    names.join(",")
}

/// Installs the global subscriber, keeping the log lines `filter` selects,
/// and, with `traces` (a process that serves requests, when an endpoint is
/// set), the layer that turns spans into OpenTelemetry spans. Logs go to
/// stderr so command output on stdout stays clean, as `output` says.
pub fn init(format: LogFormat, filter: &str, traces: Option<&TracingSettings>, output: LogOutput) {
    let (filter, rejected) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    // Colour codes only help a person at a terminal; in files they are noise.
    let ansi = std::io::stderr().is_terminal();
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match output {
        LogOutput::Direct => formatted(format, ansi, std::io::stderr),
        LogOutput::Background => match log_queue::LogQueue::start(std::io::stderr()) {
            Some((queue, flusher)) => {
                let _ = LOG_QUEUE.set(queue.clone());
                *LOG_FLUSHER.lock().unwrap_or_else(PoisonError::into_inner) = Some(flusher);
                formatted(format, ansi, queue)
            }
            None => formatted(format, ansi, std::io::stderr),
        },
    };
    // The log lines' highest level, for the `log` crate's records below.
    let log_level =
        <EnvFilter as Layer<Registry>>::max_level_hint(&filter).unwrap_or(LevelFilter::TRACE);
    let not_dependency = filter_fn(|meta| meta.target() != DEPENDENCY_TARGET);
    let logs = logs.with_filter(filter.and(not_dependency));
    let (traces, failed) = match traces.filter(|settings| settings.traces_url().is_some()) {
        Some(settings) => match provider(settings) {
            Ok(provider) => (Some(provider), None),
            Err(err) => (None, Some(err)),
        },
        None => (None, None),
    };
    let layer = traces.as_ref().map(|provider| {
        // Spans only, and only ours: log events may quote what a user
        // sent, and a library's spans would be noise.
        let ours = filter_fn(|meta| meta.is_span() && meta.target().starts_with("app"));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("app"))
            // The conventions' attributes, not the Rust source's: where in
            // the code, which thread, how long idle tell an operator nothing.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(ours)
    });
    // A second init (tests start many apps in one process) is harmless.
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(layer)
        .try_init()
        .is_ok();
    if installed {
        // The `log` crate's records (tokio-postgres writes several on every
        // poll of a connection) become events, which only the log lines
        // take: the trace layer takes spans alone. So no record above the
        // log lines' level is worth building. tracing-subscriber sets this
        // from the layers' levels, and a layer filtered by a function has
        // none it can name, which counts as every level; each record let
        // through was then refused by every filter in turn, some 3,000
        // instructions of a `/setName` (docs/benchmarks-notes.md, round
        // thirteen).
        log::set_max_level(log_level.as_log());
    }
    if let (Some(provider), true) = (traces, installed) {
        let _ = PROVIDER.set(provider);
        ENABLED.store(true, Ordering::Relaxed);
    }
    if let Some(err) = rejected {
        tracing::warn!(error = %err, "invalid log filter (RUST_LOG / --log); logging at info");
    }
    if let Some(err) = failed {
        tracing::error!(error = %chain(&err), "traces are off: the exporter cannot start");
    }
}

/// `err` and its causes, outermost first: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn provider(settings: &TracingSettings) -> Result<SdkTracerProvider, TracingError> {
    let url = settings
        .traces_url()
        .ok_or_else(|| invalid("OTEL_EXPORTER_OTLP_ENDPOINT", "not set"))?;
    // One service, one instance a process: workers are told apart by a
    // fresh id each, as the resource conventions recommend.
    let resource = Resource::builder_empty()
        .with_attributes(resource_attributes(&settings.resource_attributes)?)
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let timeout = Duration::from_millis(settings.export_timeout_ms);
    let destination = export::Destination {
        url,
        headers: settings.export_headers()?,
        roots: settings.roots()?,
    };
    let processor =
        export::Exporting::start(destination, timeout, settings.max_queue_size, &resource)?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(settings.sampler())
        .with_span_processor(processor)
        .build())
}

/// The log layer in `format`, writing through `writer`.
fn formatted<W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    // Our own lines (telemetry/line.rs: the same lines, for a fraction of
    // the work), but for a person at a terminal, who gets colours.
    match format {
        LogFormat::Text if ansi => logs.boxed(),
        LogFormat::Text => logs
            .fmt_fields(line::TextFields)
            .event_format(line::TextLine)
            .boxed(),
        // The innermost span's fields once, under "span".
        LogFormat::Json => logs
            .fmt_fields(line::JsonFields)
            .event_format(line::JsonLine)
            .boxed(),
    }
}

/// Sends what is still queued, waiting at most a few seconds: called once
/// the process has stopped serving.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        ENABLED.store(false, Ordering::Relaxed);
        let _ = provider.shutdown_with_timeout(Duration::from_secs(3));
    }
    flush_logs();
}

/// Writes out the log lines still queued for the writer thread, waiting
/// two seconds at most, and ends that thread: lines logged after it are
/// lost, so it comes last, and before any `process::exit` (which runs no
/// destructor). Nothing to do with [`LogOutput::Direct`].
pub fn flush_logs() {
    let flusher = LOG_FLUSHER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(flusher) = flusher {
        flusher.close();
    }
}

/// Log lines dropped because too much was waiting to be written.
pub(crate) fn dropped_log_lines() -> u64 {
    LOG_QUEUE.get().map_or(0, log_queue::LogQueue::dropped)
}

/// Whether this process builds and exports traces. Checked before any
/// OpenTelemetry work, so a service without an endpoint pays one load.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans lost so far in this process: queue full or export failed.
pub(crate) fn dropped_spans() -> u64 {
    DROPPED_SPANS.load(Ordering::Relaxed)
}

struct Headers<'a>(&'a poem::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// A request's place in its trace.
pub(crate) struct Trace {
    /// The trace's id, for log lines and problem documents.
    pub(crate) trace_id: String,
    /// W3C Trace Context's `traceresponse` header: the trace and the span
    /// the service made for the request, so nginx's log line names the trace
    /// when the client started none.
    pub(crate) response_header: String,
}

/// Makes `span` continue the caller's trace (W3C `traceparent` and
/// `tracestate`), or start one. None when traces are off.
pub(crate) fn continue_trace(
    span: &tracing::Span,
    headers: &poem::http::HeaderMap,
) -> Option<Trace> {
    if !enabled() {
        return None;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| Trace {
        trace_id: span_context.trace_id().to_string(),
        response_header: traceparent(&span_context),
    })
}

fn traceparent(span_context: &opentelemetry::trace::SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// Adds `attributes` to `span`'s OpenTelemetry span only: the log lines do
/// not repeat them. Nothing when traces are off.
pub(crate) fn set_attributes(span: &tracing::Span, attributes: impl IntoIterator<Item = KeyValue>) {
    if !enabled() {
        return;
    }
    for attribute in attributes {
        span.set_attribute(attribute.key, attribute.value);
    }
}

/// Marks `span` failed (a 5xx), for trace backends that colour errors.
pub(crate) fn set_error(span: &tracing::Span, description: &'static str) {
    if enabled() {
        span.set_status(opentelemetry::trace::Status::error(description));
    }
}

/// The current span's context as a W3C `traceparent`, for work that
/// continues elsewhere (an event on the stream). None when traces are off.
pub(crate) fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| traceparent(span_context))
}

/// A client span for one call to PostgreSQL or Redis, named and described
/// by the database conventions: the system, the operation (`SELECT`,
/// `EVALSHA`), the table; never a value. [`tracing::Span::none`] when
/// traces are off.
pub(crate) fn dependency_span(
    system: &'static str,
    operation: &'static str,
    collection: Option<&'static str>,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let summary = match collection {
        Some(collection) => format!("{operation} {collection}"),
        None => operation.to_owned(),
    };
    tracing::info_span!(
        target: DEPENDENCY_TARGET,
        "dependency",
        otel.name = %summary,
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = collection,
        db.query.summary = %summary,
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// In a process of its own (this test binary, run again for this test
    /// alone), since the subscriber is the process's.
    #[test]
    fn dependencies_log_records_above_the_log_lines_level_are_never_made() {
        const CHILD: &str = "APP_TEST_LOG_LEVEL_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // Traces on as well: their layer takes spans of any level.
            let traces = settings(&["--otel-exporter-otlp-endpoint", "http://127.0.0.1:9"]);
            init(
                LogFormat::Text,
                "warn,app=debug",
                Some(&traces),
                LogOutput::Direct,
            );
            assert_eq!(log::max_level(), log::LevelFilter::Debug);
            return;
        }
        let this =
            "telemetry::tests::dependencies_log_records_above_the_log_lines_level_are_never_made";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", this, "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&child.stdout);
        // Ran, and passed: a renamed test would leave `this` matching none.
        assert!(
            child.status.success() && report.contains("1 passed"),
            "the child test failed or did not run: {report}"
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        traces: TracingSettings,
    }

    fn settings(args: &[&str]) -> TracingSettings {
        crate::config::parse_args_only::<Cli>(args).traces
    }

    #[test]
    fn traces_go_to_the_endpoints_v1_traces_unless_a_traces_url_is_given() {
        assert_eq!(settings(&[]).traces_url(), None);
        let base = settings(&["--otel-exporter-otlp-endpoint", "http://collector:4318/"]);
        assert_eq!(
            base.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let both = settings(&[
            "--otel-exporter-otlp-endpoint",
            "http://collector:4318",
            "--otel-exporter-otlp-traces-endpoint",
            "http://other:4318/custom",
        ]);
        assert_eq!(
            both.traces_url().as_deref(),
            Some("http://other:4318/custom")
        );
        // An env file's empty value means unset.
        let empty = settings(&["--otel-exporter-otlp-endpoint", " "]);
        assert_eq!(empty.traces_url(), None);
    }

    /// A vendor's key goes in a header: sent, merged as the specification
    /// says (the traces' own win), and never shown by `config check`.
    #[test]
    fn export_headers_merge_decode_and_are_shown_by_name_only() {
        let traced = settings(&[
            "--otel-exporter-otlp-endpoint",
            "https://vendor.example",
            "--otel-exporter-otlp-headers",
            "X-Api-Key=s3cret%20key, x-team=all",
            "--otel-exporter-otlp-traces-headers",
            "x-team=orders",
        ]);
        traced.validate().unwrap();
        let headers = traced.export_headers().unwrap();
        assert_eq!(headers["x-api-key"], "s3cret key");
        assert_eq!(headers["x-team"], "orders");
        let shown: String = traced
            .describe()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("OTEL_EXPORTER_OTLP_HEADERS=X-Api-Key=***,x-team=***"));
    }

    #[test]
    fn settings_that_cannot_work_are_refused_by_name() {
        let refused = |args: &[&str], name: &str| {
            let err = settings(args).validate().unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
        };
        refused(
            &["--otel-exporter-otlp-endpoint", "ftp://vendor.example"],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        );
        refused(
            &[
                "--otel-exporter-otlp-endpoint",
                "http://collector:4318",
                "--otel-exporter-otlp-certificate",
                "/etc/ssl/certs/ca-certificates.crt",
            ],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        );
        refused(
            &[
                "--otel-exporter-otlp-endpoint",
                "https://vendor.example",
                "--otel-exporter-otlp-certificate",
                "/no/such/ca.pem",
            ],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        );
        refused(
            &["--otel-exporter-otlp-headers", "x-api-key"],
            "OTEL_EXPORTER_OTLP_HEADERS",
        );
        refused(
            &["--otel-exporter-otlp-traces-headers", "bad name=1"],
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        );
        refused(
            &["--otel-exporter-otlp-endpoint", "not a url"],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        );
        refused(
            &["--otel-traces-sampler-arg", "1.5"],
            "OTEL_TRACES_SAMPLER_ARG",
        );
        refused(
            &["--otel-exporter-otlp-traces-timeout", "0"],
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        );
        refused(
            &["--otel-bsp-max-queue-size", "0"],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        );
        refused(
            &["--otel-resource-attributes", "novalue"],
            "OTEL_RESOURCE_ATTRIBUTES",
        );
        assert!(
            settings(&["--otel-exporter-otlp-endpoint", "http://jaeger:4318"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn resource_attributes_are_pairs_with_percent_encoded_values() {
        let attributes =
            resource_attributes("deployment.environment.name=prod, team=a%2Cb,").unwrap();
        assert_eq!(
            attributes,
            vec![
                KeyValue::new("deployment.environment.name", "prod"),
                KeyValue::new("team", "a,b"),
            ]
        );
    }

    #[test]
    fn the_sampler_names_are_the_specifications() {
        for name in [
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ] {
            settings(&["--otel-traces-sampler", name]);
        }
    }
}
