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

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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
}

impl Phase {
    fn deadline(&self, limits: &ConnectionLimits) -> Instant {
        match self.state {
            State::Head { since } => since + limits.header,
            State::Handling => self.last_io + limits.body,
            State::Idle => self.last_io + limits.keepalive,
        }
    }
}

type SharedPhase = Arc<Mutex<Phase>>;

fn lock(phase: &SharedPhase) -> std::sync::MutexGuard<'_, Phase> {
    phase.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The phases of the open connections, by peer address (unique among open
/// TCP connections), so that middleware can reach its request's socket.
/// An entry lives as long as its connection.
#[derive(Clone, Default)]
pub(crate) struct Phases {
    open: Arc<Mutex<HashMap<SocketAddr, SharedPhase>>>,
}

impl Phases {
    fn get(&self, peer: &SocketAddr) -> Option<SharedPhase> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(peer).cloned()
    }

    fn insert(&self, peer: SocketAddr, phase: SharedPhase) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.insert(peer, phase);
    }

    fn remove(&self, peer: &SocketAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(peer);
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
}

impl<A> TimedAcceptor<A> {
    pub(crate) fn new(inner: A, limits: ConnectionLimits, phases: Phases) -> Self {
        TimedAcceptor {
            inner,
            limits,
            phases,
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
        }));
        let peer = remote.as_socket_addr().copied();
        if let Some(peer) = peer {
            self.phases.insert(peer, Arc::clone(&phase));
        }
        let io = TimedIo {
            inner: io,
            phase,
            limits: self.limits,
            timer: Box::pin(tokio::time::sleep_until(now)),
            registered: peer.map(|peer| (peer, self.phases.clone())),
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
    registered: Option<(SocketAddr, Phases)>,
}

impl<T> Drop for TimedIo<T> {
    fn drop(&mut self) {
        if let Some((peer, phases)) = &self.registered {
            phases.remove(peer);
        }
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
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    let mut phase = lock(&this.phase);
                    phase.last_io = now;
                    // The first byte of the next request starts its header
                    // timer.
                    if let State::Idle = phase.state {
                        phase.state = State::Head { since: now };
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                let (deadline, state) = {
                    let phase = lock(&this.phase);
                    (phase.deadline(&this.limits), phase.state)
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

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(count)) = written {
            if count > 0 {
                lock(&this.phase).last_io = Instant::now();
            }
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Middleware: tells each request's connection that the app has it (its
/// body, if any, is read under the body timeout) and, once answered, that
/// the connection is idle (the keep-alive timeout applies).
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

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let phase = request
            .remote_addr()
            .as_socket_addr()
            .and_then(|peer| self.phases.get(peer));
        if let Some(phase) = &phase {
            lock(phase).state = State::Handling;
        }
        let answered = self.inner.call(request).await;
        if let Some(phase) = &phase {
            let mut phase = lock(phase);
            phase.state = State::Idle;
            phase.last_io = Instant::now();
        }
        answered.map(IntoResponse::into_response)
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
        let head = Phase {
            state: State::Head { since: start },
            last_io: later,
        };
        // Bytes trickling in do not extend the headers' time.
        assert_eq!(head.deadline(&limits()), start + Duration::from_secs(10));
        let handling = Phase {
            state: State::Handling,
            last_io: later,
        };
        assert_eq!(
            handling.deadline(&limits()),
            later + Duration::from_secs(20)
        );
        let idle = Phase {
            state: State::Idle,
            last_io: later,
        };
        assert_eq!(idle.deadline(&limits()), later + Duration::from_secs(75));
    }

    #[tokio::test]
    async fn connections_leave_the_registry_when_they_close() {
        let phases = Phases::default();
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let now = Instant::now();
        let phase = Arc::new(Mutex::new(Phase {
            state: State::Idle,
            last_io: now,
        }));
        phases.insert(peer, Arc::clone(&phase));
        let io = TimedIo {
            inner: tokio::io::empty(),
            phase,
            limits: limits(),
            timer: Box::pin(tokio::time::sleep_until(now)),
            registered: Some((peer, phases.clone())),
        };
        assert_eq!(phases.len(), 1);
        drop(io);
        assert_eq!(phases.len(), 0);
    }
}
