//! init.sql's users table: usernames unique whatever their case, and its
//! indexes serve sign-in's queries as they claim to.

use app::modules::auth::users::{CREDENTIALS_SQL, SEARCH_SQL};

use crate::helpers::{fresh_database, Servers};
use crate::schema::connect;

async fn explain(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let rows = client
        .query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.get::<_, String>(0) + "\n")
        .collect()
}

#[tokio::test]
async fn usernames_are_unique_regardless_of_case() {
    let url = fresh_database(&Servers::shared()).await;
    let client = connect(&url).await;
    let insert = "INSERT INTO users (username, name, password_hash) VALUES ($1, $1, 'x')";
    client.execute(insert, &[&"Alice"]).await.unwrap();
    let err = client.execute(insert, &[&"aLICE"]).await.unwrap_err();
    assert_eq!(
        err.as_db_error().and_then(|e| e.constraint()),
        Some("users_username_lower_key")
    );
}

#[tokio::test]
async fn with_thirty_thousand_users_the_queries_use_their_indexes() {
    let url = fresh_database(&Servers::shared()).await;
    let client = connect(&url).await;
    client
        .batch_execute(
            "INSERT INTO users (username, name, password_hash)
             SELECT 'user' || g, 'Person ' || md5(g::text), 'x'
             FROM generate_series(1, 30000) AS g;
             ANALYZE users;",
        )
        .await
        .unwrap();

    // md5('12345') starts with 827ccb0e: one user in thirty thousand.
    let pattern = "%827ccb0e%";
    let search_plan = explain(&client, SEARCH_SQL, &[&pattern, &None::<String>, &21_i64]).await;
    assert!(
        search_plan.contains("users_search_trgm_idx"),
        "{search_plan}"
    );
    let found = client
        .query(SEARCH_SQL, &[&pattern, &None::<String>, &21_i64])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, String>(1), "user12345");

    let login_plan = explain(&client, CREDENTIALS_SQL, &[&"USER777"]).await;
    assert!(
        login_plan.contains("users_username_lower_key"),
        "{login_plan}"
    );
}
