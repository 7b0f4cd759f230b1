//! The feature modules this service is built from, each a folder beside
//! this file, and the one place the core learns of them: their settings,
//! their commands, their tables, their part of the API, and what they add
//! to the app.
//! Modules depend on the core; the core names no module outside this file.
//!
//! A new module is a folder with the same five things, and a line in each
//! item below.

pub mod auth;

use std::error::Error;

use clap::{Args, Subcommand};
use poem_openapi::OpenApi;

use crate::extension::Extensions;
use crate::state::AppState;
use crate::storage::migrations::Migrations;

/// Every module's settings, part of the service's own.
#[derive(Debug, Clone, Args)]
#[group(id = "ModuleSettings")]
pub struct Settings {
    #[command(flatten)]
    pub auth: auth::Settings,
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        self.auth.validate()
    }

    /// `NAME=value` pairs for `config check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        self.auth.describe()
    }
}

/// Every module's subcommands, beside the core's.
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Auth(auth::Command),
}

impl Command {
    pub async fn run(self) -> Result<(), Box<dyn Error>> {
        match self {
            Command::Auth(command) => command.run().await,
        }
    }
}

/// Every module's schema migrations, applied after the core's.
pub fn migrations() -> Vec<Migrations> {
    vec![auth::migrations()]
}

/// Every module's part of the API.
pub fn api() -> impl OpenApi {
    auth::api()
}

/// Adds every module to the app the core is building.
pub fn install(settings: &Settings, core: &AppState, extensions: &mut Extensions) {
    auth::install(&settings.auth, core, extensions);
}

/// Settings for an app built inside another program (the tests' harness),
/// whose binary is not this service's: sign-in then hashes on the app's own
/// threads, as it cannot start a hasher from that binary.
pub fn embedded_arguments() -> &'static [&'static str] {
    &["--hash-process=false"]
}
