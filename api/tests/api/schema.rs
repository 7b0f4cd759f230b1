//! The schema: the migrations bring any database to it, and init.sql, the
//! hand-written schema with each index's reason, describes exactly what
//! they build.

use std::process::Command;

use crate::helpers::{empty_database, fresh_database, migrate, repo_root, Servers};

/// A connection of its own to the database at `url`.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The database's schema as `pg_dump` prints it, less its comments and the
/// migrations' own history tables.
pub fn schema_of(url: &str) -> String {
    let out = Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=*schema_history",
            url,
        ])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // `\restrict` lines carry a random key, new with every dump.
        .filter(|line| {
            !line.starts_with("--")
                && !line.starts_with("\\restrict")
                && !line.starts_with("\\unrestrict")
                && !line.trim().is_empty()
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The first line on which two schemas part, for a readable failure.
pub fn first_difference(left: &str, right: &str) -> String {
    left.lines()
        .zip(right.lines())
        .find(|(l, r)| l != r)
        .map_or_else(
            || "one is longer than the other".to_owned(),
            |(l, r)| format!("{l:?} / {r:?}"),
        )
}

#[tokio::test]
async fn the_migrations_build_exactly_the_schema_init_sql_describes() {
    let servers = Servers::shared();
    let migrated = fresh_database(&servers).await;
    let described = empty_database(&servers).await;
    let init_sql = std::fs::read_to_string(repo_root().join("init.sql")).unwrap();
    connect(&described)
        .await
        .batch_execute(&init_sql)
        .await
        .expect("init.sql applies to an empty database");
    let (migrated, described) = (schema_of(&migrated), schema_of(&described));
    assert!(
        migrated == described,
        "init.sql and the migrations disagree (migrations / init.sql): {}\n\nmigrations:\n{migrated}\ninit.sql:\n{described}",
        first_difference(&migrated, &described)
    );
}

#[tokio::test]
async fn migrating_again_applies_nothing_and_changes_nothing() {
    let url = fresh_database(&Servers::shared()).await;
    let before = schema_of(&url);
    migrate(&url).await;
    assert_eq!(schema_of(&url), before);
}

/// refinery skips a file whose name it cannot read, and fails late on two
/// files of one version: catch both before a database sees them.
#[test]
fn every_migration_file_is_read_and_no_version_repeats() {
    for set in app::startup::migrations() {
        let files = std::fs::read_dir(repo_root().join(set.dir))
            .unwrap()
            .filter(|entry| {
                let path = entry.as_ref().unwrap().path();
                path.extension().is_some_and(|ext| ext == "sql")
            })
            .count();
        let migrations = set.runner.get_migrations();
        assert_eq!(
            migrations.len(),
            files,
            "{}: a file not named V<version>__<name>.sql",
            set.dir
        );
        let mut versions: Vec<_> = migrations.iter().map(|m| m.version()).collect();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(versions.len(), files, "{}: a version used twice", set.dir);
    }
}
