//! `users add`, the way accounts come to exist; `users hash-time`, what
//! checking a password costs here.

use std::error::Error;
use std::io::{BufRead, IsTerminal};

use clap::Args;

use crate::config::DatabaseSettings;
use crate::db::{self, users};
use crate::password;
use crate::routes::profile::normalize_name;

const PASSWORD_MIN_CHARS: usize = 8;
const PASSWORD_MAX_BYTES: usize = 1024;

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
    /// Verifications to time; the median is printed.
    #[arg(long, default_value_t = 15)]
    pub samples: usize,
}

/// Prints one password verification's time in milliseconds, on one core.
pub async fn hash_time(args: HashTimeArgs) -> Result<(), Box<dyn Error>> {
    let time =
        tokio::task::spawn_blocking(move || password::verification_time(args.samples)).await??;
    println!("{:.2}", time.as_secs_f64() * 1000.0);
    Ok(())
}

pub async fn add(args: AddUserArgs) -> Result<(), Box<dyn Error>> {
    let name = normalize_name(args.name.as_deref().unwrap_or(&args.username))?;
    let password = read_password()?;
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&password)).await??;
    let pool = db::pool(&args.database)?;
    let mut client = pool.get().await?;
    let new_user = users::NewUser {
        username: &args.username,
        name: &name,
        password_hash: &hash,
        admin: args.admin,
    };
    let id = users::create(&mut client, &new_user).await?;
    println!("created user {} (id {id})", args.username);
    Ok(())
}

/// Never from argv, where other users of the machine can read it: prompted
/// without echo on a terminal, else the first line of stdin.
fn read_password() -> Result<String, Box<dyn Error>> {
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
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(
            format!("the password must be at least {PASSWORD_MIN_CHARS} characters").into(),
        );
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(format!("the password must be at most {PASSWORD_MAX_BYTES} bytes").into());
    }
    Ok(password)
}
