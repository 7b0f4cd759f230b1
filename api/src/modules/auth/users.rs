//! Queries on `users`. Statements are prepared once per connection and cached.
//! Constraint violations come back as they are; the edge
//! (`super::routes::on_constraint`) tells clients what they did wrong.

use deadpool_postgres::{Client, GenericClient};
use tracing::Instrument;

use super::events::{self, Event};
use crate::storage::postgres;
use crate::storage::StorageError;

/// What login needs to check a password.
pub struct Credentials {
    pub id: i64,
    pub password_hash: String,
    /// Read with the hash: the session of a login that checks this hash
    /// carries it (see `super::sessions`).
    pub epoch: i64,
}

/// The fields any signed-in user may see about another.
pub struct PublicUser {
    pub id: i64,
    pub username: String,
    pub name: String,
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub admin: bool,
}

/// The login lookup, public so tests can EXPLAIN exactly what runs.
pub const CREDENTIALS_SQL: &str =
    "SELECT id, password_hash, credential_epoch FROM users WHERE lower(username) = lower($1)";

pub async fn find_credentials(
    client: &impl GenericClient,
    username: &str,
) -> Result<Option<Credentials>, StorageError> {
    let statement = client.prepare_cached(CREDENTIALS_SQL).await?;
    let row = client
        .query_opt(&statement, &[&username])
        .instrument(postgres::span("SELECT", "users"))
        .await?;
    Ok(row.map(|row| Credentials {
        id: row.get(0),
        password_hash: row.get(1),
        epoch: row.get(2),
    }))
}

/// Creates the user and its `user.created` event, in one transaction.
pub async fn create(client: &mut Client, user: &NewUser<'_>) -> Result<i64, StorageError> {
    let role = if user.admin { "admin" } else { "user" };
    let transaction = client.transaction().await?;
    let statement = transaction
        .prepare_cached(
            "INSERT INTO users (username, name, password_hash, role) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .await?;
    let row = transaction
        .query_one(
            &statement,
            &[&user.username, &user.name, &user.password_hash, &role],
        )
        .instrument(postgres::span("INSERT", "users"))
        .await?;
    let user_id = row.get(0);
    let event = Event::UserCreated {
        user_id,
        username: user.username,
        name: user.name,
        role,
    };
    events::record(&transaction, &event).await?;
    transaction
        .commit()
        .instrument(postgres::span("COMMIT", None))
        .await?;
    Ok(user_id)
}

/// A name as stored, with its version: how many times it has changed.
pub struct Name {
    pub name: String,
    pub version: i64,
}

/// `None` when the user no longer exists.
pub async fn get_name(client: &impl GenericClient, id: i64) -> Result<Option<Name>, StorageError> {
    let statement = client
        .prepare_cached("SELECT name, name_version FROM users WHERE id = $1")
        .await?;
    let row = client
        .query_opt(&statement, &[&id])
        .instrument(postgres::span("SELECT", "users"))
        .await?;
    Ok(row.map(|row| Name {
        name: row.get(0),
        version: row.get(1),
    }))
}

/// Sets the name and records its `user.name_changed` event, in one
/// statement; returns what was stored and its new version, or `None` when
/// the user no longer exists (and then no event is recorded).
///
/// One statement, committed on its own, rather than a transaction of an
/// UPDATE and [`events::record`]: one round trip to PostgreSQL instead of
/// three (`BEGIN`, the two statements together, `COMMIT`), and the row's
/// lock is held for the statement alone, not across round trips, which is
/// what concurrent changes of one user's name queue on. Under load each
/// round trip costs the worker a wake-up and PostgreSQL another
/// (docs/benchmarks.md).
pub async fn set_name(
    client: &impl GenericClient,
    id: i64,
    name: &str,
) -> Result<Option<Name>, StorageError> {
    let statement = client
        .prepare_cached(concat!(
            "WITH changed AS ( \
                 UPDATE users SET name = $2, name_version = name_version + 1, updated_at = now() \
                 WHERE id = $1 RETURNING name, name_version \
             ), recorded AS ( \
                 INSERT INTO outbox (",
            events::outbox_columns!(),
            ") SELECT $3, $4, $5, $6, $7 FROM changed \
             ) \
             SELECT name, name_version FROM changed"
        ))
        .await?;
    // The event says what the UPDATE stores: the name as given.
    let event = events::OutboxRow::new(&Event::NameChanged { user_id: id, name });
    let [event_id, kind, user_id, data, traceparent] = event.params();
    let row = client
        .query_opt(
            &statement,
            &[&id, &name, event_id, kind, user_id, data, traceparent],
        )
        .instrument(postgres::span("UPDATE", "users"))
        .await?;
    if row.is_some() {
        events::relay::wake();
    }
    Ok(row.map(|row| Name {
        name: row.get(0),
        version: row.get(1),
    }))
}

/// The user's password hash; `None` when the user no longer exists.
pub async fn get_password_hash(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<String>, StorageError> {
    let statement = client
        .prepare_cached("SELECT password_hash FROM users WHERE id = $1")
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    Ok(row.map(|row| row.get(0)))
}

/// Runs `sql`, an UPDATE of one user that starts their new credential
/// epoch and returns it first, and records `event` in the same transaction.
/// `None` when the user no longer exists.
async fn change_credentials(
    transaction: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    event: &Event<'_>,
) -> Result<Option<tokio_postgres::Row>, StorageError> {
    let statement = transaction.prepare_cached(sql).await?;
    let updated = transaction
        .query_opt(&statement, params)
        .instrument(postgres::span("UPDATE", "users"))
        .await?;
    let Some(row) = updated else {
        return Ok(None);
    };
    events::record(transaction, event).await?;
    Ok(Some(row))
}

/// Replaces the password hash, starts a new credential epoch and records
/// `user.password_changed`, in one transaction. Returns the new epoch, or
/// `None` when the user no longer exists.
pub async fn set_password_hash(
    client: &mut Client,
    id: i64,
    hash: &str,
) -> Result<Option<i64>, StorageError> {
    let transaction = client.transaction().await?;
    let row = change_credentials(
        &transaction,
        "UPDATE users SET password_hash = $2, credential_epoch = credential_epoch + 1, \
         updated_at = now() WHERE id = $1 RETURNING credential_epoch",
        &[&id, &hash],
        &Event::PasswordChanged { user_id: id },
    )
    .await?;
    transaction.commit().await?;
    Ok(row.map(|row| row.get(0)))
}

/// Starts a new credential epoch, so that every session of the user ends,
/// and records `event` (who ended them), in one transaction. Returns the new
/// epoch, or `None` when the user does not exist.
pub async fn end_sessions(
    client: &mut Client,
    id: i64,
    event: &Event<'_>,
) -> Result<Option<i64>, StorageError> {
    let transaction = client.transaction().await?;
    let row = change_credentials(
        &transaction,
        "UPDATE users SET credential_epoch = credential_epoch + 1, updated_at = now() \
         WHERE id = $1 RETURNING credential_epoch",
        &[&id],
        event,
    )
    .await?;
    transaction.commit().await?;
    Ok(row.map(|row| row.get(0)))
}

/// The user's username and role; `None` when the user no longer exists.
pub async fn get_identity(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<(String, String)>, StorageError> {
    let statement = client
        .prepare_cached("SELECT username, role FROM users WHERE id = $1")
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// The user's role (`user` or `admin`); `None` when the user no longer exists.
pub async fn get_role(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<String>, StorageError> {
    let statement = client
        .prepare_cached("SELECT role FROM users WHERE id = $1")
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    Ok(row.map(|row| row.get(0)))
}

/// What became of a role change.
pub enum RoleChange {
    /// Set: the username and the new credential epoch.
    Changed {
        username: String,
        epoch: i64,
    },
    NoSuchUser,
    /// Refused: it would leave the service with no admin.
    LastAdmin,
    /// Refused: the one asking is no longer an admin.
    NotAdmin,
}

/// Sets the role, starts a new credential epoch and records
/// `user.role_changed`, in one transaction. The admins' rows are locked
/// first (in id order, so two changes cannot deadlock), so that two admins
/// demoting each other at once are taken one after the other and the second
/// sees it would leave no admin.
pub async fn set_role(
    client: &mut Client,
    id: i64,
    role: &str,
    by: i64,
) -> Result<RoleChange, StorageError> {
    let transaction = client.transaction().await?;
    let statement = transaction
        .prepare_cached("SELECT id FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE")
        .await?;
    let admins: Vec<i64> = transaction
        .query(&statement, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Under the lock: an admin demoted by another while their own change
    // waited for it changes nothing.
    if !admins.contains(&by) {
        return Ok(RoleChange::NotAdmin);
    }
    if role != "admin" && admins == [id] {
        return Ok(RoleChange::LastAdmin);
    }
    let event = Event::RoleChanged {
        user_id: id,
        role,
        by,
    };
    let row = change_credentials(
        &transaction,
        "UPDATE users SET role = $2, credential_epoch = credential_epoch + 1, \
         updated_at = now() WHERE id = $1 RETURNING credential_epoch, username",
        &[&id, &role],
        &event,
    )
    .await?;
    let Some(row) = row else {
        return Ok(RoleChange::NoSuchUser);
    };
    transaction.commit().await?;
    Ok(RoleChange::Changed {
        epoch: row.get(0),
        username: row.get(1),
    })
}

/// The search statement, public so tests can EXPLAIN exactly what runs. The
/// ILIKE operand is the exact expression of `users_search_trgm_idx`.
pub const SEARCH_SQL: &str = "SELECT id, username, name FROM users \
     WHERE (username || ' ' || name) ILIKE $1 \
       AND ($2::text IS NULL OR lower(username) > lower($2)) \
     ORDER BY lower(username) \
     LIMIT $3";

/// Users whose username or name contains `query` (case-insensitive), in
/// username order, starting after the username `after`.
pub async fn search(
    client: &impl GenericClient,
    query: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<PublicUser>, StorageError> {
    let pattern = format!("%{}%", escape_like(query));
    let statement = client.prepare_cached(SEARCH_SQL).await?;
    let rows = client
        .query(&statement, &[&pattern, &after, &limit])
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| PublicUser {
            id: row.get(0),
            username: row.get(1),
            name: row.get(2),
        })
        .collect())
}

/// Makes `%`, `_` and `\` in user input match themselves in a LIKE pattern.
fn escape_like(input: &str) -> String {
    let mut escaped = String::with_capacity(input.len());
    for c in input.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_in_input_are_literal() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
        assert_eq!(escape_like("plain"), "plain");
    }
}
