//! Traces: the real binary exporting over OTLP/HTTP to a real receiver (a
//! small server decoding the published protobuf messages), behind the
//! shipped nginx.conf; and what happens when that receiver is gone or hangs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, Body, EndpointExt, Response, Route, Server};
use prost::Message;
use serde_json::Value;

use crate::helpers::eventually;
use crate::proxy::Nginx;
use crate::serving::Served;

/// GET `url` with the client's `traceparent`, as a caller already tracing
/// would send it.
pub async fn get_in_trace(served: &Served, url: String) -> reqwest::Response {
    served
        .client
        .get(url)
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap()
}

/// A client's span, as a caller already tracing would send it.
pub const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const CLIENT_SPAN: &str = "00f067aa0ba902b7";

pub fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// One span as received, with what a test checks flattened out.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    /// Every text in the span: attribute values, event names and theirs.
    pub texts: Vec<String>,
    pub resource: HashMap<String, String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn is_server(&self) -> bool {
        self.kind == SpanKind::Server as i32
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(number)) => number.to_string(),
        Some(AnyValue::BoolValue(flag)) => flag.to_string(),
        Some(AnyValue::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn flattened(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn spans_of(request: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|resource| flattened(&resource.attributes))
            .unwrap_or_default();
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                let attributes = flattened(&span.attributes);
                let mut texts: Vec<String> = attributes.values().cloned().collect();
                texts.push(span.name.clone());
                for event in &span.events {
                    texts.push(event.name.clone());
                    texts.extend(flattened(&event.attributes).into_values());
                }
                if let Some(status) = &span.status {
                    texts.push(status.message.clone());
                }
                spans.push(ReceivedSpan {
                    name: span.name.clone(),
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes,
                    texts,
                    resource: resource.clone(),
                });
            }
        }
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// An OTLP/HTTP receiver: decodes each `ExportTraceServiceRequest` posted
/// to /v1/traces and keeps its spans.
pub struct Receiver {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    headers: Arc<Mutex<Vec<poem::http::HeaderMap>>>,
    server: tokio::task::JoinHandle<()>,
    /// The TLS front of an https receiver.
    front: Option<tokio::task::JoinHandle<()>>,
}

#[handler]
async fn export(
    headers: &poem::http::HeaderMap,
    body: Body,
    Data(spans): Data<&Arc<Mutex<Vec<ReceivedSpan>>>>,
    Data(seen): Data<&Arc<Mutex<Vec<poem::http::HeaderMap>>>>,
) -> Response {
    let bytes = body.into_bytes().await.unwrap_or_default();
    match ExportTraceServiceRequest::decode(bytes) {
        Ok(request) => {
            seen.lock().unwrap().push(headers.clone());
            spans.lock().unwrap().extend(spans_of(&request));
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            Response::builder()
                .content_type("application/x-protobuf")
                .body(answer)
        }
        Err(_) => Response::builder()
            .status(poem::http::StatusCode::BAD_REQUEST)
            .finish(),
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let address = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let app = Route::new()
            .at("/v1/traces", poem::post(export))
            .data(spans.clone())
            .data(headers.clone());
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Receiver {
            endpoint: format!("http://{address}"),
            spans,
            headers,
            server,
            front: None,
        }
    }

    /// An https receiver, as a Collector with TLS or a vendor's is: TLS
    /// with `dir`'s `receiver.crt`/`receiver.key` in front of a plain one.
    pub async fn start_tls(dir: &std::path::Path) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut receiver = Receiver::start().await;
        let certificates = CertificateDer::pem_file_iter(dir.join("receiver.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("receiver.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plain = receiver.endpoint.trim_start_matches("http://").to_owned();
        receiver.front = Some(tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, plain) = (acceptor.clone(), plain.clone());
                tokio::spawn(async move {
                    let Ok(mut secured) = acceptor.accept(socket).await else {
                        return;
                    };
                    if let Ok(mut inner) = tokio::net::TcpStream::connect(plain).await {
                        let _ = tokio::io::copy_bidirectional(&mut secured, &mut inner).await;
                    }
                });
            }
        }));
        receiver.endpoint = format!("https://localhost:{port}");
        receiver
    }

    /// The headers of each export received.
    pub fn headers(&self) -> Vec<poem::http::HeaderMap> {
        self.headers.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans, once `ready` holds of them (at most 15 s).
    pub async fn spans_when(&self, ready: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        eventually(Duration::from_secs(15), || async { ready(&self.spans()) }).await;
        self.spans()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(front) = &self.front {
            front.abort();
        }
    }
}

/// A receiver that takes connections and never answers.
pub struct Hung {
    pub endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Hung {
    pub async fn start() -> Hung {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Hung {
            endpoint: format!("http://{address}"),
            task,
        }
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The port `served` listens on.
pub fn port_of(served: &Served) -> u16 {
    served.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// The service, exporting to `endpoint`, JSON-logging.
pub async fn traced(workers: usize, endpoint: &str, extra: &[(&str, &str)]) -> Served {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("LOG_FORMAT", "json"),
    ];
    env.extend_from_slice(extra);
    Served::start(workers, &env).await
}

#[tokio::test]
async fn a_request_through_nginx_continues_the_callers_trace() {
    let receiver = Receiver::start().await;
    let served = traced(1, &receiver.endpoint, &[]).await;
    let nginx = Nginx::start(port_of(&served), &[]);

    let answer = served
        .client
        .get(format!("{}/v1/hello?key=query-secret", nginx.url))
        .header("traceparent", client_traceparent())
        .header("tracestate", "vendor=opaque")
        .header("cookie", "cookie-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // The service says which trace and span served it (W3C traceresponse).
    let traceresponse = answer.headers()["traceresponse"].to_str().unwrap();
    assert!(
        traceresponse.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{traceresponse}"
    );

    let hello = |span: &&ReceivedSpan| span.attribute("url.path") == Some("/v1/hello");
    let spans = receiver
        .spans_when(|spans| spans.iter().any(|span| hello(&span)))
        .await;
    let request = spans
        .iter()
        .find(hello)
        .unwrap_or_else(|| panic!("no server span in {spans:#?}:\n{}", served.log()));
    assert_eq!(request.trace_id, CLIENT_TRACE);
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    assert!(traceresponse.contains(&request.span_id));
    assert!(request.is_server(), "{request:?}");
    assert_eq!(request.name, "GET /v1/hello");
    assert_eq!(request.attribute("http.request.method"), Some("GET"));
    assert_eq!(request.attribute("http.route"), Some("/v1/hello"));
    assert_eq!(request.attribute("url.path"), Some("/v1/hello"));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    // nginx named the client in X-Real-IP; the service believed it.
    assert_eq!(request.attribute("client.address"), Some("127.0.0.1"));
    assert_eq!(
        request.resource.get("service.name").map(String::as_str),
        Some(env!("CARGO_PKG_NAME"))
    );
    assert!(request.resource.contains_key("service.instance.id"));
    // Neither the query string nor a header is recorded.
    for text in &request.texts {
        assert!(!text.contains("secret"), "{text:?} in {request:?}");
    }
    // The span may be exported before the worker's log queue writes the
    // line (a tenth of a second late at most), so the log is waited for.
    served
        .log_with(&format!("\"trace_id\":\"{CLIENT_TRACE}\""))
        .await;

    // nginx's access log names the trace: the client's, and the one the
    // service started for a client that sent none.
    let started = served
        .client
        .get(format!("{}/v1/hello", nginx.url))
        .send()
        .await
        .unwrap();
    let traceresponse = started.headers()["traceresponse"].to_str().unwrap();
    let started_trace = traceresponse.split('-').nth(1).unwrap().to_owned();
    for trace in [CLIENT_TRACE, started_trace.as_str()] {
        let logged = format!("\"trace_id\":\"{trace}\"");
        let found = eventually(Duration::from_secs(5), || async {
            nginx.log().contains(&logged)
        })
        .await;
        assert!(found, "nginx did not log {logged}:\n{}", nginx.log());
    }
}

#[tokio::test]
async fn problem_documents_and_log_lines_carry_the_trace_id() {
    let receiver = Receiver::start().await;
    let served = traced(1, &receiver.endpoint, &[]).await;

    let answer = get_in_trace(&served, format!("{}/v1/no-such-thing", served.base)).await;
    assert_eq!(answer.status(), 404);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["trace_id"], CLIENT_TRACE, "{problem}");
    let request_id = problem["request_id"].as_str().unwrap().to_owned();

    // Every line about the request names the trace beside the request.
    let logged = |log: &str| {
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["span"]["request_id"] == request_id.as_str())
            .collect();
        !lines.is_empty()
            && lines
                .iter()
                .all(|line| line["span"]["trace_id"] == CLIENT_TRACE)
    };
    let named = eventually(Duration::from_secs(5), || async { logged(&served.log()) }).await;
    assert!(named, "{}", served.log());

    // Without a traceparent a trace is started, and named all the same.
    let answer = served
        .client
        .get(format!("{}/v1/no-such-thing", served.base))
        .send()
        .await
        .unwrap();
    let problem: Value = answer.json().await.unwrap();
    let started = problem["trace_id"].as_str().unwrap_or_default();
    assert_eq!(started.len(), 32, "{problem}");
    assert_ne!(started, CLIENT_TRACE);
    assert_ne!(started, "0".repeat(32));
}

#[tokio::test]
async fn without_an_endpoint_nothing_of_a_trace_is_made() {
    let served = Served::start(1, &[]).await;
    let answer = get_in_trace(&served, format!("{}/v1/no-such-thing", served.base)).await;
    assert!(answer.headers().get("traceresponse").is_none());
    let problem: Value = answer.json().await.unwrap();
    assert!(problem.get("trace_id").is_none(), "{problem}");
    assert!(problem.get("request_id").is_some(), "{problem}");
}

#[tokio::test]
async fn workers_export_as_one_service_with_distinct_instance_ids() {
    let receiver = Receiver::start().await;
    let served = traced(2, &receiver.endpoint, &[]).await;
    let two = eventually(Duration::from_secs(20), || async {
        for _ in 0..10 {
            served.get("/v1/hello").await;
        }
        let instances: std::collections::HashSet<String> = receiver
            .spans()
            .iter()
            .filter_map(|span| span.resource.get("service.instance.id").cloned())
            .collect();
        instances.len() >= 2
    })
    .await;
    assert!(two, "spans from fewer than two instances");
    let names: std::collections::HashSet<String> = receiver
        .spans()
        .iter()
        .filter_map(|span| span.resource.get("service.name").cloned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// The dropped-span counter, summed over the service's workers.
pub async fn dropped(served: &Served) -> f64 {
    let Ok(answer) = served
        .client
        .get(format!("{}/metrics", served.base))
        .send()
        .await
    else {
        return 0.0;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("otel_spans_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Requests answer promptly however the receiver fails, and the loss shows
/// in /metrics.
async fn requests_are_unaffected(endpoint: &str) {
    let served = traced(
        1,
        endpoint,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            // As many requests as it takes, from one address.
            ("RATE_LIMIT_PER_MINUTE", "0"),
        ],
    )
    .await;
    // Long enough for exports to be under way (and failing, or waiting)
    // while requests keep coming and the queue fills.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let started = Instant::now();
        let answer = get_in_trace(&served, format!("{}/v1/hello", served.base)).await;
        assert_eq!(answer.status(), 200);
        // Half the export timeout: a request that waited on an export would
        // take the whole of it; one that did not has room for a loaded
        // machine's stalls.
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "a request took {took:?}"
        );
    }
    let counted = eventually(Duration::from_secs(10), || async {
        dropped(&served).await > 0.0
    })
    .await;
    assert!(counted, "no dropped span counted:\n{}", served.log());
}

#[tokio::test]
async fn a_stopped_receiver_costs_requests_nothing_and_drops_are_counted() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint.clone();
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(100)).await;
    requests_are_unaffected(&endpoint).await;
}

#[tokio::test]
async fn a_hung_receiver_costs_requests_nothing_and_drops_are_counted() {
    let hung = Hung::start().await;
    requests_are_unaffected(&hung.endpoint).await;
}

/// A vendor's endpoint: https, a key in a header. The certificate must
/// come from the CA the service was told to trust; from another, nothing
/// is sent, and the loss is counted.
#[tokio::test]
async fn an_https_endpoint_gets_the_spans_and_headers_only_from_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    crate::tls::make_ca(dir.path(), "good");
    crate::tls::make_ca(dir.path(), "other");
    crate::tls::make_server_cert(dir.path(), "receiver", "good", "DNS:localhost");
    let trusted = dir.path().join("good.pem").display().to_string();
    let untrusted = dir.path().join("other.pem").display().to_string();
    let headers = [
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cret%20key"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=orders"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ];

    let receiver = Receiver::start_tls(dir.path()).await;
    let mut env = vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", trusted.as_str())];
    env.extend_from_slice(&headers);
    let served = traced(1, &receiver.endpoint, &env).await;
    assert_eq!(served.get("/v1/hello").await, Some(200));
    let spans = receiver.spans_when(|spans| !spans.is_empty()).await;
    assert!(!spans.is_empty(), "nothing over https:\n{}", served.log());
    let sent = receiver.headers();
    assert!(
        sent.iter()
            .all(|headers| headers["x-api-key"] == "s3cret key" && headers["x-team"] == "orders"),
        "{sent:?}"
    );
    let log = served.log_with("answered").await;
    assert!(!log.contains("s3cret"), "the key is in the log");

    let impostor = Receiver::start_tls(dir.path()).await;
    let mut env = vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", untrusted.as_str())];
    env.extend_from_slice(&headers);
    let served = traced(1, &impostor.endpoint, &env).await;
    let counted = eventually(Duration::from_secs(15), || async {
        served.get("/v1/hello").await;
        dropped(&served).await > 0.0
    })
    .await;
    assert!(counted, "no loss counted:\n{}", served.log());
    assert!(
        impostor.spans().is_empty(),
        "spans sent to an untrusted certificate"
    );
    assert!(
        impostor.headers().is_empty(),
        "the key sent to an untrusted certificate"
    );
}

/// A log line written inside a PostgreSQL or Redis call's span still names
/// the request and its trace: those spans are the trace's, not the logs'.
#[tokio::test]
async fn a_log_line_inside_a_redis_call_names_the_request_and_its_trace() {
    let receiver = Receiver::start().await;
    let hung = Hung::start().await;
    let redis_url = hung.endpoint.replace("http://", "redis://") + "/0";
    let served = traced(
        1,
        &receiver.endpoint,
        &[("REDIS_URL", &redis_url), ("REDIS_TIMEOUT_MS", "200")],
    )
    .await;
    // The per-address rate limit asks Redis, which never answers.
    let answer = get_in_trace(&served, format!("{}/v1/hello", served.base)).await;
    assert_eq!(answer.status(), 200);
    let warned = |log: &str| {
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == "Redis did not answer in time")
    };
    let found = eventually(Duration::from_secs(5), || async {
        warned(&served.log()).is_some()
    })
    .await;
    assert!(found, "{}", served.log());
    let line = warned(&served.log()).unwrap();
    assert_eq!(line["span"]["trace_id"], CLIENT_TRACE, "{line}");
    assert!(line["span"]["request_id"].is_string(), "{line}");
}
