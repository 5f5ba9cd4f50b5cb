//! The embedded default: one SQLite file in WAL mode with `synchronous = FULL`, so a commit
//! is on disk before it returns.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Executor;
use sqlx::sqlite::{
    Sqlite, SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::mpsc::Receiver;

use super::snapshot::JsonArrays;
use super::{Commit, Snapshot, Store, encode_changes, row, snapshot, sql};
use crate::domain::Change;
use crate::error::{Error, Result};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_failing.sql")),
    (3, include_str!("../../migrations/sqlite/0003_unread_indexes.sql")),
    (4, include_str!("../../migrations/sqlite/0004_failing_without_rowid.sql")),
    (5, include_str!("../../migrations/sqlite/0005_check_in_column.sql")),
];

const JSON: JsonArrays = JsonArrays { joined: "group_concat({}, ',')", array: "json_array({})" };

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Takes effect on a new file only: pages the change log's compaction frees go back
            // to the file system (see `release_free_pages`).
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            // A checkpoint that empties the write-ahead log also shortens it to this: a log
            // grown by one large write (a vacuum step, an import) does not keep its size.
            .pragma("journal_size_limit", WAL_LIMIT.to_string())
            .busy_timeout(Duration::from_secs(10));
        // One writer at a time is all SQLite allows; the engine serializes writes anyway.
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        migrate(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    pool.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)").await?;
    // Under the write lock, so two processes opening a new file together do not both apply
    // a script; in one transaction, so a failed migration leaves nothing behind.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sql::apply_migrations::<Sqlite>(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(())
}

/// One commit on `conn`: the changes and their change-log row, on the head it expects.
async fn commit_on(
    conn: &mut SqliteConnection,
    expected: u64,
    changes: &[Change],
    committed_at: i64,
) -> Result<Commit> {
    let rows = changes.iter().map(row).collect::<Result<Vec<_>>>()?;
    let encoded = encode_changes(changes)?;
    // IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a commit
    // from another handle on the same file cannot make this one fail half-way, and the head
    // read below stays the head until this transaction ends.
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let (head,): (i64,) = sqlx::query_as(sql::MAX_REVISION).fetch_one(&mut *tx).await?;
    if head as u64 != expected {
        return Ok(Commit::Conflict);
    }
    let revision = expected + 1;
    sql::write_rows::<Sqlite>(&mut tx, &rows).await?;
    sqlx::query("INSERT INTO change_log (revision, committed_at, changes) VALUES ($1, $2, $3)")
        .bind(revision as i64)
        .bind(committed_at)
        .bind(encoded)
        .execute(&mut *tx)
        .await?;
    tx.commit().await.map_err(|e| match crate::error::disk_full(&e) {
        true => Error::from(e),
        false => Error::CommitUnknown(e.to_string()),
    })?;
    Ok(Commit::Done(revision))
}

/// The bytes of write-ahead log kept once it is checkpointed (SQLite's own default checkpoints
/// at about 4 MiB of log).
const WAL_LIMIT: i64 = 4 << 20;

/// Pages per `incremental_vacuum` statement (2 MiB of 4 KiB pages): each is a write, so
/// commits wait at most for one of them, and calls on the same core for little longer.
const VACUUM_PAGES: i64 = 512;

/// Shortens the file by its free pages, so that a change log once long (an import, a replica
/// that held compaction back) does not keep its disk. A file created before auto-vacuum was
/// incremental keeps its free pages, and reuses them for new rows.
async fn release_free_pages(pool: &SqlitePool) -> Result<()> {
    let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum").fetch_one(pool).await?;
    if mode != 2 {
        return Ok(());
    }
    let mut free = i64::MAX;
    loop {
        let (now,): (i64,) = sqlx::query_as("PRAGMA freelist_count").fetch_one(pool).await?;
        if now == 0 || now >= free {
            return Ok(());
        }
        free = now;
        let started = std::time::Instant::now();
        pool.execute(format!("PRAGMA incremental_vacuum({VACUUM_PAGES})").as_str()).await?;
        sql::rest_after(started).await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot> {
        // One read transaction: every table and the revision come from the same snapshot.
        let mut tx = self.pool.begin().await?;
        let snapshot = snapshot::load::<Sqlite>(&mut tx, &JSON).await?;
        tx.commit().await?;
        Ok(snapshot)
    }

    async fn commit(&self, expected: u64, changes: &[Change], committed_at: i64) -> Result<Commit> {
        let mut conn = self.pool.acquire().await?;
        let result = commit_on(&mut conn, expected, changes, committed_at).await;
        if result.is_err() {
            // A failed COMMIT (a full disk, an I/O error) can leave the connection inside its
            // transaction, and the pool would hand it to the next write: never reuse it.
            conn.close_on_drop();
        }
        result
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<(u64, Vec<Change>)>> {
        sql::changes_since::<Sqlite>(&mut *self.pool.acquire().await?, after, limit).await
    }

    async fn committed_at(&self, revision: u64) -> Result<Option<i64>> {
        sql::committed_at::<Sqlite>(&mut *self.pool.acquire().await?, revision).await
    }

    async fn compact(&self, keep_from: u64, older_than: i64) -> Result<super::Compaction> {
        let compaction = sql::compact::<Sqlite>(&self.pool, keep_from, older_than).await?;
        if compaction.deleted > 0 {
            release_free_pages(&self.pool).await?;
        }
        Ok(compaction)
    }

    /// SQLite has no change feed: callers poll `changes_since`.
    async fn notifications(&self) -> Result<Option<Receiver<u64>>> {
        Ok(None)
    }
}
