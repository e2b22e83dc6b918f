//! Throwaway PostgreSQL databases for tests (feature `postgres`).
//!
//! Each test gets a database of its own, so tests run in parallel and leave nothing behind:
//!
//! ```no_run
//! # async fn run() {
//! let db = refsys_test_support::postgres::fresh_database().await;
//! let store = db.migrated_store().await;
//! // ... use `store`, or hand `db.url()` to a server under test ...
//! db.drop_database().await;
//! # }
//! ```
//!
//! The server is found through `DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]); its user
//! must be allowed to create databases. If it cannot be reached the helper panics, so a test
//! that needs PostgreSQL fails loudly instead of passing without it.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use refsys_core::postgres::PgUserStore;

/// The server tests use when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long the helper waits for the server before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A database created for one test; drop it with [`TestDatabase::drop_database`].
///
/// Forgetting to drop it leaves a `refsys_test_*` database on the server (harmless, but it
/// accumulates).
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    server_url: String,
    pool: PgPool,
}

/// Creates a uniquely named, empty database (`refsys_test_<random hex>`) on the server named
/// by `DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]).
///
/// # Panics
///
/// If PostgreSQL cannot be reached or refuses to create the database: tests that need it must
/// fail, not pass silently.
pub async fn fresh_database() -> TestDatabase {
    let server_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let name = format!(
        "refsys_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let mut admin = admin_connection(&server_url).await;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL refused to create database {name}: {error}"));
    let _ = admin.close().await;
    let url = with_database(&server_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy(&url)
        .unwrap_or_else(|error| panic!("bad test database URL {}: {error}", redact(&url)));
    TestDatabase {
        name,
        url,
        server_url,
        pool,
    }
}

impl TestDatabase {
    /// The database's name, `refsys_test_<random hex>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for this database (the server URL with the database name replaced), for
    /// [`PgUserStore::connect`] or a server under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool on this database (connections open on demand).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A [`PgUserStore`] on this database's [`pool`](Self::pool), with the schema applied.
    ///
    /// # Panics
    ///
    /// If the migrations fail.
    pub async fn migrated_store(&self) -> PgUserStore {
        let store = PgUserStore::new(self.pool.clone());
        store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("migrating test database {}: {error}", self.name));
        store
    }

    /// Drops the database, disconnecting anyone still connected (`WITH (FORCE)`).
    ///
    /// # Panics
    ///
    /// If PostgreSQL cannot be reached or refuses.
    pub async fn drop_database(self) {
        self.pool.close().await;
        let mut admin = admin_connection(&self.server_url).await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL refused to drop {}: {error}", self.name));
        let _ = admin.close().await;
    }
}

async fn admin_connection(server_url: &str) -> PgConnection {
    let connecting = PgConnection::connect(server_url);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => unreachable_server(server_url, &error),
        Err(_) => unreachable_server(server_url, &"no answer within 5 s"),
    }
}

fn unreachable_server(server_url: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "PostgreSQL is not reachable at {} ({error}). These tests need a running PostgreSQL \
         server whose user may create databases: start one, or point the DATABASE_URL \
         environment variable at it (default: {DEFAULT_DATABASE_URL}).",
        redact(server_url)
    )
}

/// `url` with its path (the database name) replaced by `database`; the query string is kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{server}/{database}{query}")
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |at| at + 3);
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |at| authority_start + at);
    let authority = &url[authority_start..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..authority_start],
            &authority[..colon],
            &url[authority_start + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
    }
}
