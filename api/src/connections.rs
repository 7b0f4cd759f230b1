//! Time limits on the service's own connections, as nginx keeps on its
//! own: a client gets HEADER_TIMEOUT_MS from its connection (or its first
//! byte after a response) to finish a request's headers, a request's body
//! may pause no longer than BODY_TIMEOUT_MS between reads, and an idle
//! keep-alive connection is closed after KEEPALIVE_TIMEOUT_MS. Without them
//! an idle connection, a header line every few seconds or a body byte every
//! few seconds holds a socket (and its task) for as long as the client
//! likes. The whole of a request is bounded apart from these, by
//! REQUEST_TIMEOUT_MS.
//!
//! Written here because poem's server has only an idle timeout (which any
//! byte restarts) and does not let hyper's header timer be set. The socket
//! is wrapped ([`TimedIo`]) and told by middleware ([`RequestPhases`]) when
//! a request has been handed to the app and when it has been answered, so
//! it knows which limit applies while it waits for bytes.
//!
//! The same socket notices a client that leaves while the app still works
//! on its request (an end of stream or a reset where hyper watches for
//! one), and [`RequestPhases`] then drops the request: its answer could go
//! nowhere. hyper's own check stops short of that: it closes the
//! connection, but poem, which drives the connection, polls it again to
//! drain it gracefully, and that ran such requests to their end: whatever
//! they cost, and whatever they wrote, for an answer no one would read
//! (docs/benchmarks-notes.md, round fifteen, measured what it cost).
//!
//! The same socket turns the few answers hyper writes by itself (a request
//! it cannot parse: more than 100 header fields, a control character in a
//! header; an empty 400 or 431) into problem documents like every other
//! error, since nothing in poem reaches them: they are the only answers
//! without the request id every answer of the app carries.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Body, Endpoint, IntoResponse, Middleware, PathPattern, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::error::{Problem, PROBLEM_JSON};
use crate::metrics::{Metrics, ABANDONED_ROUTE};
use crate::requests::{new_request_id, usable_request_id, REQUEST_ID_HEADER};

/// The most of a request's head kept for its `X-Request-ID`, should hyper
/// refuse the request (see [`hypers_own_error`]).
const HEAD_KEPT: usize = 64 * 1024;

/// The three limits, from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) header: Duration,
    pub(crate) body: Duration,
    pub(crate) keepalive: Duration,
}

/// Where a connection is between requests, which decides how long it may
/// wait for the client's next bytes.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a request's headers: until `since` + the header timeout.
    Head { since: Instant },
    /// The app has the request: reads (of its body) may pause for the body
    /// timeout.
    Handling,
    /// Answered: the next request may begin within the keep-alive timeout
    /// of the last activity.
    Idle,
}

#[derive(Debug)]
struct Phase {
    state: State,
    /// The last byte read or written.
    last_io: Instant,
    /// The app is waiting for the request's body. Otherwise a read while
    /// it handles the request is hyper watching for the client hanging up,
    /// which may wait as long as the handler takes (REQUEST_TIMEOUT_MS
    /// bounds that).
    awaiting_body: bool,
    /// The client hung up (or reset the connection) while the app had a
    /// request: nothing it answers can reach anyone.
    left: bool,
    /// The task of the request in hand, woken when its client leaves.
    waiting: Option<Waker>,
}

impl Phase {
    /// Until when a pending read may wait; `None`: no limit here.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match self.state {
            State::Head { since } => Some(since + limits.header),
            State::Handling if self.awaiting_body => Some(self.last_io + limits.body),
            State::Handling => None,
            State::Idle => Some(self.last_io + limits.keepalive),
        }
    }
}

type SharedPhase = Arc<Mutex<Phase>>;

fn lock(phase: &SharedPhase) -> std::sync::MutexGuard<'_, Phase> {
    phase.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection, as the address of the socket that accepted it and its
/// peer's. The peer's address alone is not unique among a worker's open
/// connections: a worker serves two sockets (the shared port and its own),
/// and a client's source port is unique per destination only, so nginx's
/// connection to one socket may come from the very address and port of
/// another client's to the other. (poem gives the listening socket's
/// address, so a socket bound to every address of a host could still see
/// one peer address and port reach it at two of them; nginx reaches the
/// service at one.)
type Connection = (SocketAddr, SocketAddr);

/// The connection `local` accepted from `remote`, if both are TCP's.
fn connection(local: &LocalAddr, remote: &RemoteAddr) -> Option<Connection> {
    Some((*local.as_socket_addr()?, *remote.as_socket_addr()?))
}

/// The phases of the open connections, so that middleware can reach its
/// request's socket. An entry lives as long as its connection.
#[derive(Clone, Default)]
pub(crate) struct Phases {
    open: Arc<Mutex<HashMap<Connection, SharedPhase>>>,
}

impl Phases {
    fn get(&self, connection: &Connection) -> Option<SharedPhase> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(connection).cloned()
    }

    fn insert(&self, connection: Connection, phase: SharedPhase) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.insert(connection, phase);
    }

    /// Removes `phase`'s entry, unless a newer connection from the same
    /// peer address to the same socket has taken its place.
    fn remove(&self, connection: &Connection, phase: &SharedPhase) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open
            .get(connection)
            .is_some_and(|held| Arc::ptr_eq(held, phase))
        {
            open.remove(connection);
        }
    }

    /// How many connections are open (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// An acceptor whose connections keep the limits.
pub(crate) struct TimedAcceptor<A> {
    inner: A,
    limits: ConnectionLimits,
    phases: Phases,
    /// Counts the connections closed.
    metrics: Metrics,
}

impl<A> TimedAcceptor<A> {
    pub(crate) fn new(
        inner: A,
        limits: ConnectionLimits,
        phases: Phases,
        metrics: Metrics,
    ) -> Self {
        TimedAcceptor {
            inner,
            limits,
            phases,
            metrics,
        }
    }
}

impl<A: Acceptor> Acceptor for TimedAcceptor<A> {
    type Io = TimedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let now = Instant::now();
        let phase = Arc::new(Mutex::new(Phase {
            // A new connection has the header timeout for its first request,
            // as nginx's client_header_timeout does.
            state: State::Head { since: now },
            last_io: now,
            awaiting_body: false,
            left: false,
            waiting: None,
        }));
        let registered = connection(&local, &remote);
        if let Some(connection) = registered {
            self.phases.insert(connection, Arc::clone(&phase));
        }
        let io = TimedIo {
            inner: io,
            phase,
            limits: self.limits,
            timer: Box::pin(tokio::time::sleep_until(now)),
            registered: registered.map(|connection| (connection, self.phases.clone())),
            metrics: self.metrics.clone(),
            replacement: None,
            head: Vec::new(),
        };
        Ok((io, local, remote, scheme))
    }
}

/// A connection's socket that fails a read once the client has kept it
/// waiting past the limit of its phase; hyper then closes the connection.
pub(crate) struct TimedIo<T> {
    inner: T,
    phase: SharedPhase,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    /// Where this connection is registered, to leave when it closes.
    registered: Option<(Connection, Phases)>,
    /// Where its closing is counted.
    metrics: Metrics,
    /// A problem document written in place of hyper's own empty error
    /// answer, and how much of it has gone out.
    replacement: Option<(Vec<u8>, usize)>,
    /// The bytes of the request head being read (up to [`HEAD_KEPT`]), for
    /// the request id of such an answer.
    head: Vec<u8>,
}

impl<T> Drop for TimedIo<T> {
    fn drop(&mut self) {
        if let Some((connection, phases)) = &self.registered {
            phases.remove(connection, &self.phase);
        }
        self.metrics.close_connection();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let room = buf.remaining();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && room > 0 => {
                // The end of the stream: between requests, a client done
                // with the connection; during one, a client that left.
                this.client_left();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    let mut phase = lock(&this.phase);
                    phase.last_io = now;
                    // The first byte of the next request starts its header
                    // timer.
                    match phase.state {
                        State::Idle => {
                            phase.state = State::Head { since: now };
                            forget_head(&mut this.head);
                        }
                        State::Handling => forget_head(&mut this.head),
                        State::Head { .. } => {}
                    }
                    if let State::Head { .. } = phase.state {
                        let read = &buf.filled()[before..];
                        let room = HEAD_KEPT.saturating_sub(this.head.len());
                        this.head.extend_from_slice(&read[..read.len().min(room)]);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                this.client_left();
                Poll::Ready(Err(err))
            }
            Poll::Pending => {
                let (deadline, state) = {
                    let phase = lock(&this.phase);
                    (phase.deadline(&this.limits), phase.state)
                };
                let Some(deadline) = deadline else {
                    return Poll::Pending;
                };
                this.timer.as_mut().reset(deadline);
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(?state, "connection closed: the client kept it waiting");
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client kept the connection waiting too long",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T> TimedIo<T> {
    /// The client has closed its side or reset the connection. While the
    /// app has a request, its task is woken to be dropped
    /// ([`RequestPhases`]). A client that only half-closes, sending its
    /// request and then the end of its stream while it waits for the
    /// answer, is taken as gone too, as hyper takes it (its `half_close`
    /// is off by default, and poem leaves it so) and as nginx never does.
    fn client_left(&self) {
        let waiting = {
            let mut phase = lock(&self.phase);
            if !matches!(phase.state, State::Handling) {
                return;
            }
            phase.left = true;
            phase.waiting.take()
        };
        if let Some(task) = waiting {
            task.wake();
        }
    }
}

/// Drops the last request's head, and the room a large one took.
fn forget_head(head: &mut Vec<u8>) {
    head.clear();
    head.shrink_to(1024);
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    /// Sends what is left of a replacement answer; ready once all is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent == bytes.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(count)) => *sent += count,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn wrote(&self, count: usize) {
        if count > 0 {
            lock(&self.phase).last_io = Instant::now();
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacement.is_some() {
            // Whatever hyper writes after its own error answer (nothing, as
            // it closes) is dropped with it.
            return this.poll_replacement(cx).map_ok(|()| buf.len());
        }
        // Only before the app has the request: what it answers is never
        // touched, whatever its body holds, nor looked at (every answer
        // would pay for the scan).
        let unhandled = matches!(lock(&this.phase).state, State::Head { .. });
        if let Some(answer) = unhandled
            .then(|| hypers_own_error(buf, &this.head))
            .flatten()
        {
            this.replacement = Some((answer, 0));
            return this.poll_replacement(cx).map_ok(|()| buf.len());
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(count)) = written {
            this.wrote(count);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Before the app has the request (hyper answering by itself) or
        // while a replacement goes out, one slice at a time through the
        // check above; it is rare.
        let unhandled = matches!(lock(&this.phase).state, State::Head { .. });
        if unhandled || this.replacement.is_some() {
            let Some(first) = bufs.iter().find(|buf| !buf.is_empty()) else {
                return Poll::Ready(Ok(0));
            };
            return Pin::new(this).poll_write(cx, first);
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(count)) = written {
            this.wrote(count);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// If `written` is the head of an error answer hyper wrote by itself (a
/// 4xx or 5xx without the request id every answer of the app carries), the
/// problem document to send instead, closing the connection as hyper does.
/// Its request id is the request's own (`request_head`'s `X-Request-ID`, as
/// nginx sends it) when usable, else a new one.
fn hypers_own_error(written: &[u8], request_head: &[u8]) -> Option<Vec<u8>> {
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&written[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    if code < 400 {
        return None;
    }
    let carries_id = lines.any(|line| {
        line.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case(REQUEST_ID_HEADER.as_str()))
    });
    if carries_id {
        return None;
    }
    let status = poem::http::StatusCode::from_u16(code).ok()?;
    let id = request_id_in(request_head).unwrap_or_else(|| new_request_id().to_string());
    let problem = Problem {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: code,
        detail: "the request could not be read as HTTP".to_owned(),
        request_id: Some(id.clone()),
        // Unreadable as HTTP: no trace to continue, none started.
        trace_id: None,
    };
    let body = poem_openapi::types::ToJSON::to_json_string(&problem);
    let answer = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\
         {REQUEST_ID_HEADER}: {id}\r\nconnection: close\r\n\r\n{body}",
        status.canonical_reason().unwrap_or("Error"),
        body.len(),
    );
    tracing::info!(status = code, request_id = %id, "answered a request that could not be read as HTTP");
    Some(answer.into_bytes())
}

/// The usable `X-Request-ID` among a raw request head's lines, if any.
fn request_id_in(head: &[u8]) -> Option<String> {
    head.split(|&byte| byte == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case(REQUEST_ID_HEADER.as_str()) {
            return None;
        }
        let value = poem::http::HeaderValue::from_str(value.trim()).ok()?;
        usable_request_id(&value).map(str::to_owned)
    })
}

/// Middleware: tells each request's connection that the app has it (its
/// body, if any, is read under the body timeout) and, once answered, that
/// the connection is idle (the keep-alive timeout applies). A request whose
/// client leaves before the answer is dropped there and then, with
/// whatever it was waiting for, and answered [`CLIENT_CLOSED_REQUEST`] for
/// the log line and the metrics: the answer itself goes nowhere.
/// Work that must finish once begun runs in a task of its own
/// (`tokio::spawn`), as it must for the request deadline already.
pub(crate) struct RequestPhases {
    pub(crate) phases: Phases,
}

impl<E: Endpoint> Middleware<E> for RequestPhases {
    type Output = RequestPhasesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestPhasesEndpoint {
            inner,
            phases: self.phases.clone(),
        }
    }
}

pub(crate) struct RequestPhasesEndpoint<E> {
    inner: E,
    phases: Phases,
}

impl<E: Endpoint> Endpoint for RequestPhasesEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let phase = connection(request.local_addr(), request.remote_addr())
            .and_then(|connection| self.phases.get(&connection));
        if let Some(phase) = &phase {
            lock(phase).state = State::Handling;
            // A request without a body (hyper knows: no length or a length
            // of 0, not chunked) has nothing to wait for, and keeps the body
            // that says so.
            let body = request.take_body();
            if body.is_empty() {
                request.set_body(body);
            } else {
                let body = WatchedBody {
                    inner: Box::pin(body.into_bytes_stream()),
                    phase: Arc::clone(phase),
                };
                request.set_body(Body::from_bytes_stream(body));
            }
        }
        let call = self.inner.call(request);
        let Some(phase) = phase else {
            return call.await.map(IntoResponse::into_response);
        };
        let answered = until_client_leaves(call, &phase).await;
        {
            let mut phase = lock(&phase);
            phase.state = State::Idle;
            phase.awaiting_body = false;
            phase.last_io = Instant::now();
            phase.waiting = None;
        }
        match answered {
            Some(answered) => answered.map(IntoResponse::into_response),
            None => {
                tracing::debug!("the client left before the answer: the request was dropped");
                let mut response = CLIENT_CLOSED_REQUEST.into_response();
                response.set_data(PathPattern(ABANDONED_ROUTE.into()));
                Ok(response)
            }
        }
    }
}

/// nginx's name and number for a request whose client closed the
/// connection before the answer: what such a request is logged and counted
/// as here too.
const CLIENT_CLOSED_REQUEST: poem::http::StatusCode = match poem::http::StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => poem::http::StatusCode::BAD_REQUEST,
};

/// `call`'s answer, or `None` once the connection's client has left, with
/// `call` dropped unfinished. The check costs a request nothing until it
/// first waits (a lock and a waker then).
async fn until_client_leaves<F: Future>(call: F, phase: &SharedPhase) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(answered) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(answered));
        }
        let mut phase = lock(phase);
        if phase.left {
            return Poll::Ready(None);
        }
        if !phase
            .waiting
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            phase.waiting = Some(cx.waker().clone());
        }
        Poll::Pending
    })
    .await
}

/// A request's body, telling its connection while the app waits for it:
/// only then does the body timeout apply.
struct WatchedBody {
    inner: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    phase: SharedPhase,
}

impl Stream for WatchedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_next(cx);
        lock(&this.phase).awaiting_body = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header: Duration::from_secs(10),
            body: Duration::from_secs(20),
            keepalive: Duration::from_secs(75),
        }
    }

    #[test]
    fn each_phase_waits_for_its_own_limit() {
        let start = Instant::now();
        let later = start + Duration::from_secs(3);
        let phase = |state, awaiting_body| Phase {
            state,
            last_io: later,
            awaiting_body,
            left: false,
            waiting: None,
        };
        // Bytes trickling in do not extend the headers' time.
        let head = phase(State::Head { since: start }, false);
        assert_eq!(
            head.deadline(&limits()),
            Some(start + Duration::from_secs(10))
        );
        let reading_body = phase(State::Handling, true);
        assert_eq!(
            reading_body.deadline(&limits()),
            Some(later + Duration::from_secs(20))
        );
        // The app is working, not waiting for the client: no limit here.
        assert_eq!(phase(State::Handling, false).deadline(&limits()), None);
        let idle = phase(State::Idle, false);
        assert_eq!(
            idle.deadline(&limits()),
            Some(later + Duration::from_secs(75))
        );
    }

    #[tokio::test]
    async fn connections_leave_the_registry_and_are_counted_when_they_close() {
        let phases = Phases::default();
        let metrics = Metrics::default();
        let socket: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let connection: Connection = (socket, "127.0.0.1:5555".parse().unwrap());
        let open = |phases: &Phases| {
            let now = Instant::now();
            let phase = Arc::new(Mutex::new(Phase {
                state: State::Idle,
                last_io: now,
                awaiting_body: false,
                left: false,
                waiting: None,
            }));
            phases.insert(connection, Arc::clone(&phase));
            TimedIo {
                inner: tokio::io::empty(),
                phase,
                limits: limits(),
                timer: Box::pin(tokio::time::sleep_until(now)),
                registered: Some((connection, phases.clone())),
                metrics: metrics.clone(),
                replacement: None,
                head: Vec::new(),
            }
        };
        let first = open(&phases);
        assert_eq!(phases.len(), 1);
        assert_eq!(metrics.connections_closed(), 0);
        drop(first);
        assert_eq!(phases.len(), 0);
        assert_eq!(metrics.connections_closed(), 1);

        // The peer's port reused by a new connection before the old one's
        // socket was dropped: the old one leaves the new one's entry alone.
        let old = open(&phases);
        let new = open(&phases);
        drop(old);
        assert_eq!(metrics.connections_closed(), 2);
        let held = phases
            .get(&connection)
            .expect("the new connection is registered");
        assert!(Arc::ptr_eq(&held, &new.phase));
        drop(new);
        assert_eq!(phases.len(), 0);
        assert_eq!(metrics.connections_closed(), 3);
    }

    #[test]
    fn only_hypers_own_error_answers_are_replaced() {
        let hypers =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let replaced = String::from_utf8(hypers_own_error(hypers, b"").unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(replaced.contains("content-type: application/problem+json\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(replaced.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["status"], 431);
        let id = body["request_id"].as_str().unwrap();
        assert!(replaced.contains(&format!("x-request-id: {id}\r\n")));
        assert!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "spelled as the request context's ids: {id}"
        );

        let ours = b"HTTP/1.1 400 Bad Request\r\nX-Request-ID: abc\r\ncontent-length: 2\r\n\r\n{}";
        assert!(hypers_own_error(ours, b"").is_none());
        let fine = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(hypers_own_error(fine, b"").is_none());
        let continuing = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert!(hypers_own_error(continuing, b"").is_none());
        assert!(hypers_own_error(b"{\"half a body", b"").is_none());

        // The request's own id, as nginx sent it, when it is usable.
        let head = b"GET / HTTP/1.1\r\nX-Request-Id: from-nginx-7\r\nx-f: a\r\n";
        let replaced = String::from_utf8(hypers_own_error(hypers, head).unwrap()).unwrap();
        assert!(
            replaced.contains("x-request-id: from-nginx-7\r\n"),
            "{replaced}"
        );
        let hostile = b"GET / HTTP/1.1\r\nx-request-id: a b\r\n";
        let replaced = String::from_utf8(hypers_own_error(hypers, hostile).unwrap()).unwrap();
        assert!(!replaced.contains("a b"), "{replaced}");
    }
}
