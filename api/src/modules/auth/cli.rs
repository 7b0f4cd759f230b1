//! `users add`, the way accounts come to exist; `users hash-time`, what
//! checking a password costs here.

use std::error::Error;
use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};

use super::domain::{DisplayName, NewPassword, Username};
use super::hasher;
use super::passwords;
use super::routes::on_constraint;
use super::users;
use crate::storage::postgres::{self, DatabaseSettings};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    #[command(name = hasher::SUBCOMMAND, hide = true)]
    Hasher(HasherArgs),
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from stdin (one line) or prompted.
    Add(AddUserArgs),
    /// Time one password verification (ms, one running a CPU): what bounds logins.
    HashTime(HashTimeArgs),
}

/// A worker's password hasher, which the worker starts itself
/// (`hasher.rs`): requests on stdin, replies on stdout.
#[derive(Debug, Args)]
pub struct HasherArgs {
    /// Hashes computed at once.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl Command {
    pub async fn run(self) -> Result<(), Box<dyn Error>> {
        match self {
            Command::Users {
                command: UsersCommand::Add(args),
            } => add(args).await,
            Command::Users {
                command: UsersCommand::HashTime(args),
            } => hash_time(args).await,
            Command::Hasher(args) => {
                tokio::task::spawn_blocking(move || hasher::serve(args.threads)).await??;
                Ok(())
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// 3 to 32 letters, digits, '_', '.' or '-'; unique regardless of case.
    pub username: String,
    /// Display name; defaults to the username.
    #[arg(long)]
    pub name: Option<String>,
    /// Give the user the admin role.
    #[arg(long)]
    pub admin: bool,
    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct HashTimeArgs {
    /// Verifications each thread times; the median of all is printed.
    #[arg(long, default_value_t = 15)]
    pub samples: usize,
    /// Verifications running at once; by default one a CPU, as a loaded
    /// service runs them.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Prints one password verification's time in milliseconds, with one
/// running on each CPU at once (or `--threads`).
async fn hash_time(args: HashTimeArgs) -> Result<(), Box<dyn Error>> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let time =
        tokio::task::spawn_blocking(move || passwords::verification_time(args.samples, threads))
            .await??;
    println!("{:.2}", time.as_secs_f64() * 1000.0);
    Ok(())
}

async fn add(args: AddUserArgs) -> Result<(), Box<dyn Error>> {
    let username = Username::parse(&args.username)?;
    let name = DisplayName::parse(args.name.as_deref().unwrap_or(&args.username))?;
    let password = read_password()?;
    let hash =
        tokio::task::spawn_blocking(move || passwords::hash_blocking(&password.into_inner()))
            .await??;
    let pool = postgres::pool(&args.database)?;
    let mut client = pool.get().await?;
    let new_user = users::NewUser {
        username: username.as_str(),
        name: name.as_str(),
        password_hash: &hash,
        admin: args.admin,
    };
    let id = users::create(&mut client, &new_user)
        .await
        .map_err(on_constraint)?;
    println!("created user {} (id {id})", username.as_str());
    Ok(())
}

/// Never from argv, where other users of the machine can read it: prompted
/// without echo on a terminal, else the first line of stdin.
fn read_password() -> Result<NewPassword, Box<dyn Error>> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password (again): ")?;
        if first != again {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(NewPassword::parse(password)?)
}
