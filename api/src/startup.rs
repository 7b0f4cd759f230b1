//! Assembles the app and runs it on a socket. Tests bind port 0 and read the
//! address back from [`Application::local_addr`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::endpoint::StaticFilesEndpoint;
use poem::http::uri::Scheme;
use poem::http::Method;
use poem::listener::{Acceptor, AcceptorExt, BoxAcceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::CatchPanic;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, Request, Route, Server};
use tokio::sync::watch;

use crate::budget::RequestBudget;
use crate::config::{Docs, Settings};
use crate::connections::{ConnectionLimits, Phases, RequestPhases, TimedAcceptor};
use crate::deadline::RequestDeadline;
use crate::error::{self, DocumentedRoutes};
use crate::extension::{Extensions, Shared};
use crate::modules;
use crate::openapi::{self, DocumentError, Documents};
use crate::requests::{RequestContext, SizeLimits, UniqueJsonKeys};
use crate::routes;
use crate::routes::cached::{self, Freshness};
use crate::state::{AppState, StateError};
use crate::storage::migrations::{self, MigrateError, Migrations};
use crate::storage::postgres::{self, DatabaseSettings};
use crate::versions::{self, DeprecationHeaders};

/// Every route of the service, the modules' included, with problem
/// documents for every error. `policy` is the versions' deprecation policy,
/// `versions::POLICY` but in tests; a mistake in it fails here, at start.
pub fn app(
    state: AppState,
    settings: &Settings,
    extensions: &mut Extensions,
    policy: &str,
) -> Result<BoxEndpoint<'static>, DocumentError> {
    let api = routes::api();
    let documents = Documents::build(&api.spec(), policy)?;
    let docs = routes::docs::page(&documents);
    let documented = DocumentedRoutes::from_document(documents.combined());
    let deprecations = DeprecationHeaders::new(documents.policy().clone());
    let mut route = Route::new()
        .nest("/", api)
        .at("/metrics", poem::get(routes::metrics::metrics))
        .nest("/static", static_files(&settings.static_dir));
    if settings.docs == Docs::Public {
        route = route
            .at("/openapi.json", json(documents.combined()))
            .nest("/docs", docs);
        for (version, document) in documents.versions() {
            route = route.at(["/", version, "/openapi.json"].concat(), json(document));
        }
    }
    let routes = route
        .with(UniqueJsonKeys {
            max_body_bytes: settings.max_body_bytes,
        })
        .with(SizeLimits {
            max_body_bytes: settings.max_body_bytes,
            max_header_bytes: settings.max_header_bytes,
        })
        .data(state.clone())
        .boxed();
    let app = extensions
        .wrap(routes)
        .catch_all_error(error::render)
        .with(deprecations)
        .with(RequestBudget::new(state.limiter.clone()))
        .with(RequestDeadline {
            timeout: Duration::from_millis(settings.request_timeout_ms),
        })
        // Outermost of these, so that every answer, the budget's 429s
        // included, carries the route template it was for (metrics label
        // it so).
        .with(documented)
        .boxed();
    Ok(app)
}

/// Every set of migrations, the core's first, then each module's.
pub fn migrations() -> Vec<Migrations> {
    let mut sets = vec![migrations::core()];
    sets.extend(modules::migrations());
    sets
}

/// How long start-up waits for PostgreSQL to take a connection, and for
/// another process's migrations to finish, before it gives up.
pub const MIGRATION_PATIENCE: Duration = Duration::from_secs(60);

/// Applies every pending migration before the service serves. PostgreSQL
/// may still be starting (as in a compose stack): connecting is retried
/// for [`MIGRATION_PATIENCE`]; a failing migration is not retried.
pub async fn migrate_before_serving(database: &DatabaseSettings) -> Result<(), MigrateError> {
    let deadline = tokio::time::Instant::now() + MIGRATION_PATIENCE;
    loop {
        match migrations::migrate(database, migrations(), MIGRATION_PATIENCE).await {
            Ok(applied) if applied.is_empty() => {
                tracing::info!("schema up to date");
                return Ok(());
            }
            Ok(applied) => {
                tracing::info!(?applied, "migrations applied");
                return Ok(());
            }
            // PostgreSQL still starting; not a wrong password or URL.
            Err(err @ (MigrateError::Connect(_) | MigrateError::Timeout))
                if still_starting(&err) && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %error::chain(&err), "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

fn still_starting(err: &MigrateError) -> bool {
    match err {
        MigrateError::Connect(err) => {
            err.as_db_error().is_none() && !err.to_string().contains("invalid")
        }
        _ => true,
    }
}

/// Serves an OpenAPI document as `make openapi` writes it.
fn json(document: &serde_json::Value) -> impl Endpoint {
    poem::get(cached::fixed(
        openapi::render(document),
        "application/json; charset=utf-8",
        Freshness::Revalidate,
    ))
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
    #[error(transparent)]
    Documents(#[from] DocumentError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
}

/// A bound, not yet running server.
pub struct Application {
    acceptor: BoxAcceptor,
    local_addr: SocketAddr,
    state: AppState,
    settings: Arc<Settings>,
    extensions: Extensions,
    shared: Shared,
    app: BoxEndpoint<'static>,
}

impl Application {
    /// Binds `settings.bind` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_policy(settings, versions::POLICY).await
    }

    /// As [`Application::build`], with another deprecation policy than
    /// `api/versions.toml`: tests deprecate versions this way.
    pub async fn build_with_policy(settings: Settings, policy: &str) -> Result<Self, StartupError> {
        let address = settings.bind;
        let acceptor = TcpListener::bind(address)
            .into_acceptor()
            .await
            .map_err(|source| StartupError::Bind { address, source })?;
        Self::with_acceptor(acceptor.boxed(), settings, policy)
    }

    /// Serves sockets bound by someone else: a worker's, inherited from the
    /// master (the shared one and, with worker ports, its own). Must be
    /// called inside a tokio runtime.
    pub fn from_listeners(
        listeners: Vec<std::net::TcpListener>,
        settings: Settings,
    ) -> Result<Self, StartupError> {
        let address = settings.bind;
        let mut acceptor: Option<BoxAcceptor> = None;
        for listener in listeners {
            let accepting = listener
                .set_nonblocking(true)
                .and_then(|()| TcpAcceptor::from_std(listener))
                .map_err(|source| StartupError::Bind { address, source })?;
            acceptor = Some(match acceptor {
                Some(others) => others.combine(accepting).boxed(),
                None => accepting.boxed(),
            });
        }
        let acceptor = acceptor.ok_or_else(|| StartupError::Bind {
            address,
            source: io::Error::new(io::ErrorKind::InvalidInput, "no socket to serve"),
        })?;
        Self::with_acceptor(acceptor, settings, versions::POLICY)
    }

    fn with_acceptor(
        acceptor: BoxAcceptor,
        settings: Settings,
        policy: &str,
    ) -> Result<Self, StartupError> {
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .unwrap_or(settings.bind);
        let state = AppState::new(
            &settings.database,
            &settings.redis,
            settings.rate_limit_per_minute,
        )?;
        let mut extensions = Extensions::default();
        if let Some(idle) = settings.database.idle_timeout() {
            extensions.task(postgres::close_idle_connections(state.db.clone(), idle));
        }
        modules::install(&settings.modules, &state, &mut extensions);
        // Built here, not in `run_until`, so a broken route table or OpenAPI
        // description fails the start instead of the first request.
        let app = app(state.clone(), &settings, &mut extensions, policy)?;
        Ok(Application {
            acceptor,
            local_addr,
            state,
            settings: Arc::new(settings),
            shared: extensions.shared(),
            extensions,
            app,
        })
    }

    /// Wraps the app's endpoint, for process-level concerns such as request
    /// budgets.
    pub fn wrap(mut self, wrap: impl FnOnce(BoxEndpoint<'static>) -> BoxEndpoint<'static>) -> Self {
        self.app = wrap(self.app);
        self
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// What the modules made reachable to their handlers
    /// (`Extensions::data`).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Serves until `shutdown` completes, then stops accepting and gives
    /// in-flight requests up to the graceful timeout to finish.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let grace = Duration::from_secs(self.settings.graceful_timeout);
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = ConnectionLimits {
            header: Duration::from_millis(self.settings.header_timeout_ms),
            body: Duration::from_millis(self.settings.body_timeout_ms),
            keepalive: Duration::from_millis(self.settings.keepalive_timeout_ms),
        };
        let phases = Phases::default();
        let acceptor = StopAccepting {
            local_addr: self.acceptor.local_addr(),
            inner: Some(self.acceptor),
            stop: stop_rx,
        };
        let acceptor =
            TimedAcceptor::new(acceptor, limits, phases.clone(), self.state.metrics.clone());
        let drain = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            tokio::time::sleep(SETTLE).await;
        };
        // Outermost, around what `wrap` added too, so that every request has
        // its id and client address and is logged once.
        let context =
            RequestContext::new(&self.settings.trusted_proxies, self.state.metrics.clone());
        // A panic becomes a problem document inside the context, so that
        // it carries the request's id and is logged and counted as a 500.
        let app = self
            .app
            .with(CatchPanic::new().with_handler(error::panicked))
            // The connection's time limits follow each request from the
            // moment the app has it until it is answered, and a request
            // whose client leaves is dropped here: inside the context, so
            // that it is still logged and counted (as a 499).
            .with(RequestPhases { phases })
            .with(context);
        // The tasks (the pool's upkeep, the modules') run while the app
        // serves, and stop with it.
        let tasks: Vec<_> = self
            .extensions
            .take_tasks()
            .into_iter()
            .map(tokio::spawn)
            .collect();
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, drain, Some(grace))
            .await;
        for task in tasks {
            task.abort();
        }
        served
    }
}

/// How long connections accepted just before a shutdown get to become
/// requests before draining starts (see [`StopAccepting`]).
const SETTLE: Duration = Duration::from_millis(500);

/// Stops taking connections the moment shutdown begins, `SETTLE` before poem
/// starts draining. Draining closes every connection with no request in
/// flight, and one accepted an instant earlier may not have sent its request
/// yet: its client would see the connection closed.
///
/// It also closes this process's copy of the sockets then. A socket shared
/// with other workers goes on being served by them; one nobody else holds
/// (a worker port given up by SIGTTOU) is closed, so clients are refused at
/// once instead of waiting in a queue that no one reads.
struct StopAccepting<A> {
    inner: Option<A>,
    local_addr: Vec<LocalAddr>,
    stop: watch::Receiver<bool>,
}

impl<A: Acceptor> Acceptor for StopAccepting<A> {
    type Io = A::Io;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.local_addr.clone()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        if let Some(inner) = self.inner.as_mut() {
            tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => {}
                accepted = inner.accept() => return accepted,
            }
        }
        // Shutting down: no more connections from this process.
        self.inner = None;
        std::future::pending().await
    }
}
