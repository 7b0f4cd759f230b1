//! Assembles the app and runs it on a socket. Tests bind port 0 and read the
//! address back from [`Application::local_addr`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::endpoint::StaticFilesEndpoint;
use poem::http::Method;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, Request, Route, Server};

use crate::config::Settings;
use crate::error;
use crate::routes;
use crate::state::{AppState, StateError};

/// Every route of the service, with problem documents for every error.
pub fn app(state: AppState) -> BoxEndpoint<'static> {
    let api = routes::api();
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/static", static_files(&state.settings.static_dir))
        .data(state)
        .with(Tracing)
        .catch_all_error(error::render)
        .boxed()
}

/// Files under `dir`. poem's endpoint answers only GET; HEAD is served as
/// GET, and hyper leaves the body out of HEAD responses by itself.
fn static_files(dir: &Path) -> impl Endpoint {
    StaticFilesEndpoint::new(dir).before(|mut req: Request| async move {
        if req.method() == Method::HEAD {
            req.set_method(Method::GET);
        }
        Ok(req)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
}

/// A bound, not yet running server.
pub struct Application {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    state: AppState,
    app: BoxEndpoint<'static>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let address = settings.bind;
        let state = AppState::new(settings)?;
        let acceptor = TcpListener::bind(address)
            .into_acceptor()
            .await
            .map_err(|source| StartupError::Bind { address, source })?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .unwrap_or(address);
        // Built here, not in `run_until`, so a broken route table or OpenAPI
        // description fails the start instead of the first request.
        let app = app(state.clone());
        Ok(Application {
            acceptor,
            local_addr,
            state,
            app,
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then gives in-flight requests up to
    /// the graceful timeout to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let grace = Duration::from_secs(self.state.settings.graceful_timeout);
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.app, shutdown, Some(grace))
            .await
    }
}
