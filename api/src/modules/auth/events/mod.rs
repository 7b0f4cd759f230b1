//! Events for other services: users created, names, roles and passwords
//! changed, logins and logouts, sessions ended by an admin, on a Redis stream (`{REDIS_KEY_PREFIX}events`), through a
//! transactional outbox. docs/architecture.md shows a consumer.
//!
//! A change and its event are written in one PostgreSQL transaction
//! ([`record`] with the change's transaction, or, for a change that is one
//! statement, an `INSERT` in that statement: `users::set_name`), so there is
//! never one without the other. The [`relay`] moves events from the
//! `outbox` table to the stream in order and deletes them once Redis has
//! them; while Redis is away they wait in the table. Delivery is at least
//! once: a relay stopped between the two sends a batch again, with the same
//! `event_id`s, for consumers to drop. Logins and logouts change Redis, not
//! PostgreSQL: their event is written right after the change, and a login
//! whose event cannot be written is undone.

pub mod relay;

use deadpool_postgres::GenericClient;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tracing::Instrument;
use uuid::Uuid;

use crate::requests;
use crate::storage::postgres;
use crate::storage::StorageError;

/// The stream's key, after `REDIS_KEY_PREFIX`.
pub const STREAM: &str = "events";

/// A state change other services may care about.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    UserCreated {
        user_id: i64,
        username: &'a str,
        name: &'a str,
        role: &'a str,
    },
    NameChanged {
        user_id: i64,
        name: &'a str,
    },
    /// `session` is the session's public id, never its token.
    LoggedIn {
        user_id: i64,
        session: &'a str,
    },
    /// `session: None` when every session of the user ended.
    LoggedOut {
        user_id: i64,
        session: Option<&'a str>,
    },
    /// Every session of the user ended with it. `by`: the admin.
    RoleChanged {
        user_id: i64,
        role: &'a str,
        by: i64,
    },
    /// Every session of the user ended with it.
    PasswordChanged {
        user_id: i64,
    },
    /// An admin (`by`) ended every session of the user.
    SessionsEnded {
        user_id: i64,
        by: i64,
    },
}

impl Event<'_> {
    /// The `type` field on the stream.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::UserCreated { .. } => "user.created",
            Event::NameChanged { .. } => "user.name_changed",
            Event::LoggedIn { .. } => "user.logged_in",
            Event::LoggedOut { .. } => "user.logged_out",
            Event::RoleChanged { .. } => "user.role_changed",
            Event::PasswordChanged { .. } => "user.password_changed",
            Event::SessionsEnded { .. } => "user.sessions_ended",
        }
    }

    pub fn user_id(&self) -> i64 {
        match self {
            Event::UserCreated { user_id, .. }
            | Event::NameChanged { user_id, .. }
            | Event::LoggedIn { user_id, .. }
            | Event::LoggedOut { user_id, .. }
            | Event::RoleChanged { user_id, .. }
            | Event::PasswordChanged { user_id }
            | Event::SessionsEnded { user_id, .. } => *user_id,
        }
    }

    /// The `data` field on the stream, as JSON.
    pub fn data(&self) -> Value {
        match self {
            Event::UserCreated {
                user_id,
                username,
                name,
                role,
            } => json!({ "user_id": user_id, "username": username, "name": name, "role": role }),
            Event::NameChanged { user_id, name } => json!({ "user_id": user_id, "name": name }),
            Event::LoggedIn { user_id, session } => {
                json!({ "user_id": user_id, "session": session })
            }
            Event::LoggedOut { user_id, session } => json!({
                "user_id": user_id,
                "session": session,
                "all_sessions": session.is_none(),
            }),
            Event::RoleChanged { user_id, role, by } => {
                json!({ "user_id": user_id, "role": role, "by": by })
            }
            Event::PasswordChanged { user_id } => json!({ "user_id": user_id }),
            Event::SessionsEnded { user_id, by } => json!({ "user_id": user_id, "by": by }),
        }
    }
}

/// The outbox's columns, in the order of [`OutboxRow::params`]; a macro,
/// so that a statement can `concat!` it.
macro_rules! outbox_columns {
    () => {
        "event_id, type, user_id, data, traceparent"
    };
}
pub(crate) use outbox_columns;

/// `event` as one row of the outbox, for [`record`] and for a change that
/// inserts its event in its own statement (`users::set_name`): with
/// [`outbox_columns!`], the two cannot store an event differently.
pub(crate) struct OutboxRow {
    event_id: Uuid,
    kind: &'static str,
    user_id: i64,
    data: Value,
    traceparent: Option<String>,
}

impl OutboxRow {
    /// A new event id, and the trace of the request that caused it, so a
    /// consumer continues it (docs/architecture.md).
    pub(crate) fn new(event: &Event<'_>) -> OutboxRow {
        OutboxRow {
            event_id: Uuid::new_v4(),
            kind: event.kind(),
            user_id: event.user_id(),
            data: event.data(),
            traceparent: requests::current_traceparent(),
        }
    }

    /// The values, in [`outbox_columns!`]' order.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.event_id,
            &self.kind,
            &self.user_id,
            &self.data,
            &self.traceparent,
        ]
    }
}

/// Adds `event` to the outbox through `client`: the transaction of the
/// change it describes. Returns the event's id.
pub async fn record(client: &impl GenericClient, event: &Event<'_>) -> Result<Uuid, StorageError> {
    let row = OutboxRow::new(event);
    let statement = client
        .prepare_cached(concat!(
            "INSERT INTO outbox (",
            outbox_columns!(),
            ") VALUES ($1, $2, $3, $4, $5)"
        ))
        .await?;
    client
        .execute(&statement, &row.params())
        .instrument(postgres::span("INSERT", "outbox"))
        .await?;
    relay::wake();
    Ok(row.event_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_what_changed_and_never_carry_a_token() {
        let created = Event::UserCreated {
            user_id: 7,
            username: "ada",
            name: "Ada",
            role: "user",
        };
        assert_eq!(created.kind(), "user.created");
        assert_eq!(created.data()["username"], "ada");
        let everywhere = Event::LoggedOut {
            user_id: 7,
            session: None,
        };
        assert_eq!(everywhere.data()["all_sessions"], true);
        let login = Event::LoggedIn {
            user_id: 7,
            session: "3f9a01b2",
        };
        assert_eq!(login.data(), json!({ "user_id": 7, "session": "3f9a01b2" }));
    }
}
