//! The stack's floor, for `make bench`: `GET /v1/hello` as poem and
//! poem-openapi answer it with nothing of the service around it (no
//! middleware, no log line or span, no metrics, no budget), on one
//! current-thread runtime, as a worker runs.
//!
//! The bench puts two of these behind the shipped nginx.conf, as it puts
//! the service's two workers, so the report shows how much of the proxied
//! ceiling the framework alone leaves and how much the service's own work
//! takes of the rest (docs/benchmarks-notes.md).
//!
//!     cargo run --release --example floor -- 127.0.0.1:9300

use poem::listener::TcpListener;
use poem::{Route, Server};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, OpenApiService};

/// The same body as the service's `/v1/hello`.
#[derive(Object)]
struct Hello {
    version: String,
    message: String,
}

struct Api;

#[OpenApi]
impl Api {
    #[oai(path = "/v1/hello", method = "get")]
    async fn hello(&self) -> Json<Hello> {
        Json(Hello {
            version: "v1".into(),
            message: "Hello, world!".into(),
        })
    }
}

fn main() -> std::io::Result<()> {
    let Some(address) = std::env::args().nth(1) else {
        eprintln!("usage: floor ADDRESS (for example 127.0.0.1:9300)");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Route::new().nest("/", OpenApiService::new(Api, "floor", "1"));
        Server::new(TcpListener::bind(address)).run(app).await
    })
}
