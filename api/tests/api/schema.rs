//! init.sql: idempotent.

use app::storage::postgres::INIT_SQL;

use crate::helpers::{fresh_database, Servers};

/// A connection of its own to the database at `url`.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn init_sql_can_run_again_on_an_initialised_database() {
    let url = fresh_database(&Servers::shared()).await; // applied once already
    let client = connect(&url).await;
    client.batch_execute(INIT_SQL).await.unwrap();
    client.batch_execute(INIT_SQL).await.unwrap();
}
