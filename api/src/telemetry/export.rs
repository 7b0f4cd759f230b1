//! Finished spans to the OTLP receiver, off the request path. A request
//! only puts its spans in a bounded queue (a full one drops them, counted);
//! a thread of its own takes them out in batches and sends each with a
//! time limit (a failed or late batch is dropped, counted). So a collector
//! that is down, or hangs, costs requests nothing and memory no more than
//! the queue. The SDK's batch processor does the same but keeps its drop
//! count to itself; this one's is `otel_spans_dropped_total` in /metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::trace::SpanKind;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::{TracingError, REQUEST_SPAN};

/// Spans dropped in this process since it started.
pub(crate) static DROPPED_SPANS: AtomicU64 = AtomicU64::new(0);

/// Most spans in one export.
const MAX_BATCH: usize = 512;
/// Longest a finished span waits for its batch to fill.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// Largest answer read from the receiver (an OTLP answer is a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where spans go and how: the URL, the headers each export carries, and
/// for https the CAs to trust in place of the system's.
pub(crate) struct Destination {
    pub(crate) url: String,
    pub(crate) headers: std::collections::HashMap<String, String>,
    pub(crate) roots: Option<Vec<reqwest::Certificate>>,
}

#[derive(Debug)]
pub(crate) struct Exporting {
    queue: SyncSender<SpanData>,
    stop: Arc<AtomicBool>,
    /// Says when the thread has sent its last batch.
    done: Mutex<Receiver<()>>,
}

impl Exporting {
    /// Starts the exporting thread, sending to `destination` with at most
    /// `timeout` an export, holding at most `queue` spans.
    pub(crate) fn start(
        destination: Destination,
        timeout: Duration,
        queue: usize,
        resource: &Resource,
    ) -> Result<Exporting, TracingError> {
        let Destination {
            url,
            headers,
            roots,
        } = destination;
        let mut client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(roots) = roots {
            client = roots
                .into_iter()
                .fold(client.tls_built_in_root_certs(false), |client, root| {
                    client.add_root_certificate(root)
                });
        }
        let client = client
            .build()
            .map_err(|err| TracingError::Thread(std::io::Error::other(err)))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Client(client))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_headers(headers)
            .with_timeout(timeout)
            .build()
            .map_err(TracingError::Exporter)?;
        exporter.set_resource(resource);
        let (sender, receiver) = mpsc::sync_channel(queue);
        let (done_sender, done) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Its own small runtime: the exporter's client is async, and this
        // thread must never borrow the request runtime's time.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TracingError::Thread)?;
        std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                run(&runtime, &exporter, &receiver, &stopping, timeout);
                let _ = done_sender.send(());
            })
            .map_err(TracingError::Thread)?;
        Ok(Exporting {
            queue: sender,
            stop,
            done: Mutex::new(done),
        })
    }
}

fn run(
    runtime: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    queue: &Receiver<SpanData>,
    stop: &AtomicBool,
    timeout: Duration,
) {
    let mut failing = false;
    loop {
        let deadline = Instant::now() + MAX_DELAY;
        let mut batch = Vec::new();
        let mut disconnected = false;
        while batch.len() < MAX_BATCH && !stop.load(Ordering::Relaxed) {
            match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        let stopping = disconnected || stop.load(Ordering::Relaxed);
        if stopping {
            // What is queued goes in the last batch; no more comes.
            batch.extend(queue.try_iter().take(MAX_BATCH.saturating_sub(batch.len())));
        }
        if !batch.is_empty() {
            let count = batch.len() as u64;
            // The timer belongs to the runtime: made inside it.
            let sent = runtime
                .block_on(async { tokio::time::timeout(timeout, exporter.export(batch)).await });
            match sent {
                Ok(Ok(())) => {
                    if failing {
                        tracing::info!("trace export recovered");
                        failing = false;
                    }
                }
                Ok(Err(err)) => {
                    DROPPED_SPANS.fetch_add(count, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(error = %err, "trace export failing; dropping spans");
                        failing = true;
                    }
                }
                Err(_) => {
                    DROPPED_SPANS.fetch_add(count, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(?timeout, "trace export timed out; dropping spans");
                        failing = true;
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

impl SpanProcessor for Exporting {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, mut span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if span.name == REQUEST_SPAN {
            name_request(&mut span);
        }
        match self.queue.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED_SPANS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.stop.store(true, Ordering::Relaxed);
        let done = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match done.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
        }
    }
}

/// The HTTP server conventions name a request's span `{method} {route}`
/// and make it a server span; the route is known only once it is answered,
/// and a tracing span's name is fixed, so it is named here.
fn name_request(span: &mut SpanData) {
    span.span_kind = SpanKind::Server;
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.as_str().into_owned())
    };
    let method = attribute("http.request.method");
    let route = attribute("http.route");
    span.name = match (method, route) {
        (Some(method), Some(route)) => format!("{method} {route}").into(),
        (Some(method), None) => method.into(),
        _ => REQUEST_SPAN.into(),
    };
}

/// The exporter's HTTP client: the service's own reqwest (async, plain
/// HTTP), on the exporting thread's runtime.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: poem::http::Request<Bytes>,
    ) -> Result<poem::http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err("the OTLP receiver's answer is too large".into());
            }
            answer.extend_from_slice(&chunk);
        }
        let mut built = poem::http::Response::new(Bytes::from(answer));
        *built.status_mut() = status;
        *built.headers_mut() = headers;
        Ok(built)
    }
}
