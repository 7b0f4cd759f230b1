//! `openapi write` keeps `openapi/` equal to what the service serves;
//! `openapi breaking` compares those documents with a base (another
//! branch's, extracted by scripts/api-compat.sh) for breaking changes.

use std::error::Error;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::openapi::compat::breaking_changes;
use crate::openapi::{self, Scope, COMBINED_FILE};
use crate::versions;

#[derive(Debug, Subcommand)]
pub enum OpenapiCommand {
    /// Write this build's OpenAPI documents to DIR: the whole API's and one
    /// a version's. Removes the documents of versions no longer served.
    Write {
        #[arg(long, default_value = "openapi", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Compare the documents in DIR with those in BASE; exit 1 on a breaking
    /// change outside a version that BASE does not have.
    Breaking {
        #[arg(long, value_name = "DIR")]
        base: PathBuf,
        #[arg(long, default_value = "openapi", value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn run(command: OpenapiCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        OpenapiCommand::Write { dir } => write(&dir).map(|()| ExitCode::SUCCESS),
        OpenapiCommand::Breaking { base, dir } => breaking(&base, &dir),
    }
}

fn write(dir: &Path) -> Result<(), Box<dyn Error>> {
    let documents = crate::routes::documents()?;
    fs::create_dir_all(dir)?;
    let files = documents.files();
    for (name, document) in &files {
        let path = dir.join(name);
        fs::write(&path, openapi::render(document))?;
        println!("wrote {}", path.display());
    }
    for name in version_files(dir)? {
        if !files.iter().any(|(written, _)| *written == name) {
            let path = dir.join(&name);
            fs::remove_file(&path)?;
            println!("removed {} (no longer served)", path.display());
        }
    }
    Ok(())
}

/// The `vN.json` files in `dir`.
fn version_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name
            .strip_suffix(".json")
            .and_then(versions::number)
            .is_some()
        {
            names.push(name);
        }
    }
    names.sort_by_key(|name| versions::number(name.trim_end_matches(".json")));
    Ok(names)
}

fn breaking(base: &Path, dir: &Path) -> Result<ExitCode, Box<dyn Error>> {
    let mut found = 0;
    // What no version owns, such as /healthz, can never break.
    let combined = base.join(COMBINED_FILE);
    if combined.exists() {
        let old = openapi::scoped(&read(&combined)?, Scope::Unversioned);
        let new = openapi::scoped(&read(&dir.join(COMBINED_FILE))?, Scope::Unversioned);
        found += report("unversioned", &old, &new);
    }
    for name in version_files(base)? {
        let version = name.trim_end_matches(".json");
        let old = read(&base.join(&name))?;
        let current = dir.join(&name);
        if current.exists() {
            found += report(version, &old, &read(&current)?);
        } else if fully_deprecated(&old) {
            println!("{version}: removed, after being deprecated");
        } else {
            println!("{version}: removed without being deprecated first");
            found += 1;
        }
    }
    let known = version_files(base)?;
    for name in version_files(dir)? {
        if !known.contains(&name) {
            let version = name.trim_end_matches(".json");
            println!("{version}: new, free to differ from the versions before it");
        }
    }
    if found == 0 {
        println!("no breaking changes");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{found} breaking change(s): make them in a new version instead (make version NEW=vN), see docs/versioning.md"
    );
    Ok(ExitCode::FAILURE)
}

fn report(scope: &str, old: &Value, new: &Value) -> usize {
    let changes = breaking_changes(old, new);
    for change in &changes {
        println!("{scope}: {change}");
    }
    changes.len()
}

/// Whether every operation in a document was flagged deprecated.
fn fully_deprecated(document: &Value) -> bool {
    let mut operations = openapi::paths(document)
        .flat_map(|(_, item)| openapi::operations(item))
        .peekable();
    operations.peek().is_some() && operations.all(|(_, operation)| operation["deprecated"] == true)
}

fn read(path: &Path) -> Result<Value, Box<dyn Error>> {
    let text = fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()).into())
}
