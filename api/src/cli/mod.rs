//! The command line. Each subcommand takes only the settings it uses.

mod healthcheck;
mod openapi;

use std::error::Error;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::EnvFile;
use crate::error;
use crate::modules;
use crate::server::{self, Handoff, Loaded, ServeArgs};
use crate::startup::{self, MIGRATION_PATIENCE};
use crate::storage::migrations;
use crate::storage::postgres::DatabaseSettings;
use crate::telemetry::{self, LogFormat, LogOutput};

#[derive(Debug, Parser)]
#[command(name = env!("CARGO_PKG_NAME"), version, about = env!("CARGO_PKG_DESCRIPTION"))]
pub struct Cli {
    /// Env file to load before reading settings; variables already in the
    /// environment win. Defaults to .env.local when it exists.
    #[arg(long, global = true, env = "ENV_FILE", value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which log lines to keep, as a tracing filter (`info`, `app=debug,info`).
    #[arg(long = "log", global = true, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// From the master to the processes it starts (`server::Handoff`).
    #[arg(long = "handoff", hide = true, value_name = "HANDOFF")]
    pub handoff: Option<Handoff>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API: a master and its workers, until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Manage the database schema.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Exit 0 if the service's /readyz answers 200 (for container healthchecks).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// The OpenAPI documents: write them, or check changes for breakage.
    Openapi {
        #[command(subcommand)]
        command: openapi::OpenapiCommand,
    },
    /// The feature modules' own (`crate::modules`).
    #[command(flatten)]
    Module(modules::Command),
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply every pending migration to DATABASE_URL, in order. The first
    /// that fails stops it and is rolled back; those before it stay.
    Migrate(DatabaseSettings),
    /// List each set's applied and pending migrations.
    Status(DatabaseSettings),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the settings and print those in effect, secrets redacted.
    Check(Box<ServeArgs>),
}

pub fn main() -> ExitCode {
    let arguments: Vec<OsString> = std::env::args_os().collect();
    // The env file's values are the arguments' defaults, so it is read
    // ahead of parsing, its path picked out of the arguments. A worker
    // reads none: its master put the file's variables in its environment.
    let handoff = Handoff::find(&arguments);
    let env_file = if handoff
        .as_ref()
        .is_some_and(Handoff::uses_masters_environment)
    {
        Ok(EnvFile::default())
    } else {
        EnvFile::load(env_file_argument(&arguments).as_deref())
    };
    let env_file = match env_file {
        Ok(env_file) => env_file,
        Err(err) => {
            eprintln!("error: cannot load the env file: {err}");
            return ExitCode::from(2);
        }
    };
    let cli = match parse(&env_file, &arguments) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // Traces, and logs written by a thread of their own, come from the
    // processes that serve requests: a worker, or a lone process, neither
    // of which forks. A master only forks and watches.
    let (traces, output) = match &cli.command {
        Command::Serve(args) if serves_requests(&cli.handoff, args) => {
            (Some(args.settings.telemetry.clone()), LogOutput::Background)
        }
        _ => (None, LogOutput::Direct),
    };
    telemetry::init(cli.log_format, &cli.log_filter, traces.as_ref(), output);
    // Serving forks worker processes, which must happen before any async
    // runtime (with its threads) exists; the other commands run on one.
    if let Command::Serve(args) = cli.command {
        let loaded = Loaded {
            args: *args,
            environment: env_file.for_children(),
        };
        let code = server::run(loaded, cli.handoff, reload_from(env_file, arguments));
        telemetry::shutdown();
        return code;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error::chain(&*err));
            ExitCode::FAILURE
        }
    }
}

/// Whether this `serve` process answers requests itself.
fn serves_requests(handoff: &Option<Handoff>, args: &ServeArgs) -> bool {
    match handoff {
        Some(handoff) => handoff.is_worker(),
        None => args.process.no_master,
    }
}

/// The command line, with the env file's values as defaults.
fn parse(env_file: &EnvFile, arguments: &[OsString]) -> Result<Cli, clap::Error> {
    let mut command = env_file.apply(Cli::command());
    let matches = command.try_get_matches_from_mut(arguments)?;
    Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut command))
}

/// For SIGHUP: the env file read again, then the command line parsed again.
fn reload_from(mut env_file: EnvFile, arguments: Vec<OsString>) -> server::Reload {
    Box::new(move || {
        env_file
            .reload()
            .map_err(|err| format!("cannot reload the env file: {err}"))?;
        let cli = parse(&env_file, &arguments).map_err(|err| err.to_string())?;
        match cli.command {
            Command::Serve(args) => {
                // The master's own settings only: the reload's probe, a
                // process of its own, checks the rest as a worker would
                // (`server::run`), so the master never runs that code.
                args.process.validate()?;
                Ok(Loaded {
                    args: *args,
                    environment: env_file.for_children(),
                })
            }
            _ => Err("the command line is not `serve` any more".into()),
        }
    })
}

/// `--env-file PATH`, `--env-file=PATH`, else `ENV_FILE`.
fn env_file_argument(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--env-file" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--env-file=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("ENV_FILE").map(PathBuf::from)
}

async fn run(command: Command) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        Command::Serve(_) => return Err("serve does not run inside an async runtime".into()),
        Command::Db {
            command: DbCommand::Migrate(database),
        } => {
            let applied =
                migrations::migrate(&database, startup::migrations(), MIGRATION_PATIENCE).await?;
            for migration in &applied {
                println!("applied {migration}");
            }
            if applied.is_empty() {
                println!("schema up to date");
            }
        }
        Command::Db {
            command: DbCommand::Status(database),
        } => {
            for set in migrations::status(&database, startup::migrations()).await? {
                for migration in set.applied {
                    println!("{}: {migration}", set.history);
                }
                for migration in set.pending {
                    println!("{}: {migration} pending", set.history);
                }
            }
        }
        Command::Module(command) => command.run().await?,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            args.validate()?;
            print!("{}{}", args.settings.describe(), args.process.describe());
        }
        Command::Healthcheck(args) => return Ok(healthcheck::run(args).await),
        Command::Openapi { command } => return openapi::run(command),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_file_argument_is_found_in_either_spelling() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            env_file_argument(&args(&["api", "--env-file", "x.env", "serve"])),
            Some(PathBuf::from("x.env"))
        );
        assert_eq!(
            env_file_argument(&args(&["api", "serve", "--env-file=y.env"])),
            Some(PathBuf::from("y.env"))
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
