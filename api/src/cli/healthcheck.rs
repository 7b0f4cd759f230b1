//! `healthcheck`: a probe for container HEALTHCHECKs, which have no curl.
//!
//! By default it asks for liveness (`/healthz`: the process serves), which
//! is what a container's health should mean: a restart helps a wedged
//! process, never a Redis blip. `--ready` asks for readiness (`/readyz`:
//! PostgreSQL and Redis answer), which decides traffic, not restarts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::DEFAULT_BIND;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to probe; defaults to /healthz (or /readyz with --ready) on the
    /// port of BIND, on loopback.
    #[arg(long)]
    pub url: Option<String>,
    /// Ask for readiness (/readyz) instead of liveness (/healthz).
    #[arg(long, conflicts_with = "url")]
    pub ready: bool,
    /// The service's listen address, used to derive the default URL.
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND, hide = true)]
    pub bind: SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_seconds: u64,
}

pub async fn run(args: HealthcheckArgs) -> ExitCode {
    let url = args.url.unwrap_or_else(|| {
        let mut target = args.bind;
        // A wildcard bind (0.0.0.0 in a container) is reached on loopback.
        if target.ip().is_unspecified() {
            target.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let probe = if args.ready { "readyz" } else { "healthz" };
        format!("http://{target}/{probe}")
    });
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_seconds))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("unhealthy: cannot build an HTTP client: {err}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => {
            println!("healthy: {url} answered 200");
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("unhealthy: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("unhealthy: {url}: {err}");
            ExitCode::FAILURE
        }
    }
}
