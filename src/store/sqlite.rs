//! The embedded default: one SQLite file in WAL mode with `synchronous = FULL`, so a commit
//! is on disk before it returns.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Row as _};

use super::{Row, Snapshot, Store, decode, encode_changes, row};
use crate::domain::model::{Assignment, Connector, Device, Group, Policy, TenantSettings, User};
use crate::domain::{Change, State};
use crate::error::{Error, Result};

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_init.sql"))];

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
            .busy_timeout(Duration::from_secs(10));
        // One writer at a time is all SQLite allows; the engine serializes writes anyway.
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        migrate(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    pool.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)").await?;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(pool)
            .await?;
        if done.is_none() {
            let mut tx = pool.begin().await?;
            // Through `Executor::execute` (SQLite runs every statement of the script), not
            // `raw_sql(sql).execute(&mut *tx)`: that future is not provably `Send` (a rustc
            // higher-ranked lifetime limitation), which made `server::serve` impossible to spawn.
            tx.execute(*sql).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)").bind(version).execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn bodies(pool: &SqlitePool, sql: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(sql).fetch_all(pool).await?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot> {
        let mut state = State::default();
        for b in bodies(&self.pool, "SELECT body FROM users").await? {
            state.apply(Change::PutUser(decode::<User>(&b)?));
        }
        for b in bodies(&self.pool, "SELECT body FROM groups").await? {
            state.apply(Change::PutGroup(decode::<Group>(&b)?));
        }
        for b in bodies(&self.pool, "SELECT body FROM policies").await? {
            state.apply(Change::PutPolicy(decode::<Policy>(&b)?));
        }
        for b in bodies(&self.pool, "SELECT body FROM assignments").await? {
            state.apply(Change::PutAssignment(decode::<Assignment>(&b)?));
        }
        for r in sqlx::query("SELECT name, body FROM singletons").fetch_all(&self.pool).await? {
            let (name, body): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            match name.as_str() {
                "connector" => state.apply(Change::PutConnector(decode::<Connector>(&body)?)),
                "settings" => state.apply(Change::PutSettings(decode::<TenantSettings>(&body)?)),
                other => return Err(Error::Storage(format!("unknown singleton {other:?}"))),
            };
        }
        let mut rows = sqlx::query_scalar::<_, String>("SELECT body FROM devices").fetch(&self.pool);
        use futures_util::TryStreamExt;
        while let Some(b) = rows.try_next().await? {
            state.apply(Change::PutDevice(decode::<Device>(&b)?));
        }
        drop(rows);
        let revision: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM change_log").fetch_one(&self.pool).await?;
        Ok(Snapshot { state, revision: revision as u64 })
    }

    async fn commit(&self, changes: &[Change], committed_at: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        for change in changes {
            let q = match row(change)? {
                Row::User(id, Some(body)) => sqlx::query(
                    "INSERT INTO users (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                )
                .bind(id)
                .bind(body),
                Row::User(id, None) => sqlx::query("DELETE FROM users WHERE id = $1").bind(id),
                Row::Group(id, kind, Some(body)) => sqlx::query(
                    "INSERT INTO groups (id, kind, body) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, body = excluded.body",
                )
                .bind(id)
                .bind(kind)
                .bind(body),
                Row::Group(id, _, None) => sqlx::query("DELETE FROM groups WHERE id = $1").bind(id),
                Row::Device { id, user_id, serial, body: Some(body) } => sqlx::query(
                    "INSERT INTO devices (id, user_id, serial_number, body) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                     serial_number = excluded.serial_number, body = excluded.body",
                )
                .bind(id)
                .bind(user_id)
                .bind(serial)
                .bind(body),
                Row::Device { id, body: None, .. } | Row::DeleteDevice(id) => {
                    sqlx::query("DELETE FROM devices WHERE id = $1").bind(id)
                }
                Row::Policy(id, Some(body)) => sqlx::query(
                    "INSERT INTO policies (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                )
                .bind(id)
                .bind(body),
                Row::Policy(id, None) => {
                    sqlx::query("DELETE FROM assignments WHERE policy_id = $1").bind(id).execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM policies WHERE id = $1").bind(id)
                }
                Row::Assignment(id, Some(body)) => sqlx::query(
                    "INSERT INTO assignments (policy_id, body) VALUES ($1, $2) \
                     ON CONFLICT (policy_id) DO UPDATE SET body = excluded.body",
                )
                .bind(id)
                .bind(body),
                Row::Assignment(id, None) => sqlx::query("DELETE FROM assignments WHERE policy_id = $1").bind(id),
                Row::Singleton(name, body) => sqlx::query(
                    "INSERT INTO singletons (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                )
                .bind(name)
                .bind(body),
            };
            q.execute(&mut *tx).await?;
        }
        let revision: i64 =
            sqlx::query_scalar("INSERT INTO change_log (committed_at, changes) VALUES ($1, $2) RETURNING revision")
                .bind(committed_at)
                .bind(encode_changes(changes)?)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(revision as u64)
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<(u64, Vec<Change>)>> {
        let rows =
            sqlx::query("SELECT revision, changes FROM change_log WHERE revision > $1 ORDER BY revision LIMIT $2")
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let revision: i64 = r.try_get(0)?;
                let changes: String = r.try_get(1)?;
                Ok((revision as u64, decode(&changes)?))
            })
            .collect()
    }
}
