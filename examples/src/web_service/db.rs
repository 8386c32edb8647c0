//! The database: one SQLite connection shared by the whole process, every
//! query run on Tokio's blocking pool so that SQLite never stalls the async
//! workers, and a counter of the queries run, which `/stats` reports: a cache
//! hit leaves it where it was.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// How long a query waits for another process's write lock before failing:
/// two instances of the service may share one database file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The users a fresh database starts with.
const SEED: [(&str, &str); 3] = [
    ("Ada Lovelace", "ada@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Grace Hopper", "grace@example.com"),
];

/// A row of the `users` table; also what the API returns and the cache stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The row id.
    pub id: i64,
    /// The display name.
    pub name: String,
    /// The e-mail address.
    pub email: String,
}

/// A query that failed: SQLite refused it, or the blocking task running it
/// died.
#[derive(Debug)]
pub struct DbError(String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database error: {}", self.0)
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        DbError(error.to_string())
    }
}

/// A handle on the database. Cheap to clone; clones share the connection and
/// the query counter.
#[derive(Clone)]
pub struct Db {
    // One connection behind a mutex rather than a pool: SQLite admits one
    // writer at a time anyway, and this service's queries are point lookups
    // that hold the lock for microseconds.
    conn: Arc<Mutex<Connection>>,
    process_queries: Arc<AtomicU64>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("process_queries", &self.process_queries())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (or creates) the database file at `path`, or an in-memory
    /// database when `path` is `None`, creates the `users` table if missing
    /// and seeds it if empty.
    pub async fn open(path: Option<&Path>) -> Result<Db, DbError> {
        let path = path.map(Path::to_path_buf);
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, DbError> {
            let mut conn = match &path {
                Some(path) => Connection::open(path)?,
                None => Connection::open_in_memory()?,
            };
            conn.busy_timeout(BUSY_TIMEOUT)?;
            if path.is_some() {
                // WAL lets readers of one process run while another writes;
                // the pragma answers with the mode it actually set.
                let mode: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(
                        mode,
                        "SQLite refused WAL mode; concurrent processes will wait on each other"
                    );
                }
            }
            create_and_seed(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| DbError(format!("the task opening the database failed: {e}")))??;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            process_queries: Arc::default(),
        })
    }

    /// Queries run by this process since it started (startup excluded).
    pub fn process_queries(&self) -> u64 {
        self.process_queries.load(Ordering::Relaxed)
    }

    /// The user with this id, if there is one.
    pub async fn user(&self, id: i64) -> Result<Option<User>, DbError> {
        self.run(move |conn| {
            conn.prepare_cached("SELECT id, name, email FROM users WHERE id = ?1")?
                .query_row([id], user_from_row)
                .optional()
        })
        .await
    }

    /// Every user, by id.
    pub async fn users(&self) -> Result<Vec<User>, DbError> {
        self.run(|conn| {
            conn.prepare_cached("SELECT id, name, email FROM users ORDER BY id")?
                .query_map([], user_from_row)?
                .collect()
        })
        .await
    }

    /// Sets a user's name and e-mail; `None` if there is no user with this id.
    pub async fn update_user(
        &self,
        id: i64,
        name: String,
        email: String,
    ) -> Result<Option<User>, DbError> {
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE users SET name = ?2, email = ?3 WHERE id = ?1 RETURNING id, name, email",
            )?
            .query_row((id, &name, &email), user_from_row)
            .optional()
        })
        .await
    }

    /// Adds a user; SQLite picks the id.
    pub async fn insert_user(&self, name: String, email: String) -> Result<User, DbError> {
        self.run(move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (name, email) VALUES (?1, ?2) RETURNING id, name, email",
            )?
            .query_row((&name, &email), user_from_row)
        })
        .await
    }

    /// Runs one query on the blocking pool and counts it.
    async fn run<T, F>(&self, query: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.process_queries.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot leave the connection
            // half-written: SQLite rolls back any statement it did not finish.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            query(&conn)
        })
        .await
        .map_err(|e| DbError(format!("the query task failed: {e}")))?
        .map_err(DbError::from)
    }
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
    })
}

/// Creates the table and seeds it, once per database file: the immediate
/// transaction takes the write lock before looking, so a second instance
/// starting at the same moment waits, then finds the rows and adds none.
fn create_and_seed(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL
        )",
        [],
    )?;
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM users)", [], |row| {
        row.get(0)
    })?;
    if empty {
        let mut insert = tx.prepare("INSERT INTO users (name, email) VALUES (?1, ?2)")?;
        for user in SEED {
            insert.execute(user)?;
        }
        drop(insert);
        tracing::info!(users = SEED.len(), "seeded an empty database");
    }
    tx.commit()
}
