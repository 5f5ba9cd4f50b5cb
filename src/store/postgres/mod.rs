//! PostgreSQL, for several replicas sharing one database. The tables are those of SQLite
//! (JSON documents as TEXT) and the SQL is the same portable subset (`sql.rs`); the only
//! PostgreSQL-only features are advisory locks and LISTEN/NOTIFY, and both can be turned off
//! for PostgreSQL-compatible engines that lack them (CockroachDB, YugabyteDB).
//!
//! Revisions: a commit takes `pg_advisory_xact_lock(COMMIT_LOCK, <schema key>)`, numbers
//! itself `MAX(revision) + 1` under it, writes its rows and its change-log row, publishes
//! the revision with `pg_notify` and commits, which releases the lock. The next commit, from
//! any replica, reads MAX only once it holds the lock, that is once the previous commit is
//! visible: revisions have no gaps, and a reader tailing `revision > N` never sees N+2
//! before N+1. Without advisory locks the same holds (a commit can only read N+1 as the
//! maximum once N+1 is committed), and two commits that pick the same number collide on
//! the change log's primary key; the loser is retried.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use tokio::sync::mpsc::Receiver;

use super::snapshot::JsonArrays;
use super::{Commit, Row, Snapshot, Store, encode_changes, redact, row, snapshot, sql};
use crate::domain::Change;
use crate::error::{Error, Result};

mod notifications;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../../migrations/postgres/0002_failing.sql")),
    (3, include_str!("../../../migrations/postgres/0003_unread_indexes.sql")),
    (4, include_str!("../../../migrations/postgres/0004_check_in_column.sql")),
];

/// First key of the advisory lock every commit holds; the second is [`schema_key`], so
/// stores in different schemas of one database do not wait for each other.
const COMMIT_LOCK: i32 = 0x504f_0001;
/// First key of the advisory lock migrations hold (second key 0: one for the database).
const MIGRATION_LOCK: i32 = 0x504f_0002;

/// The NOTIFY channel of the default schema (`public`); see [`channel_for`].
pub const CHANNEL: &str = "posture_changes";

const INSERT_LOG: &str = "INSERT INTO change_log (revision, committed_at, changes) VALUES ($1, $2, $3)";
/// Every table and the revision from one snapshot.
const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// How often a commit that hit a serialization failure or a deadlock is tried before the
/// error is returned.
const COMMIT_ATTEMPTS: u32 = 10;
const MIGRATION_ATTEMPTS: u32 = 4;

/// How to open a [`PostgresStore`]. [`PostgresStore::open`] reads these from the URL's
/// `posture_*` query parameters.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Keep the tables in this schema, created if missing (`posture_schema=NAME`). `None`:
    /// the connection's `search_path` decides (`public`, or `?options=-c search_path=NAME`
    /// for a schema that exists). Lowercase letters, digits and `_`.
    pub schema: Option<String>,
    /// Serialize commits and migrations with advisory locks (`posture_advisory_locks=off`
    /// turns them off). Without them, commits that race are retried.
    pub advisory_locks: bool,
    /// Publish each revision with `pg_notify` and offer [`Store::notifications`]
    /// (`posture_notify=off` turns it off: replicas poll).
    pub notify: bool,
    pub max_connections: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { schema: None, advisory_locks: true, notify: true, max_connections: 8 }
    }
}

pub struct PostgresStore {
    pool: PgPool,
    /// For the listeners' own connections.
    connect: PgConnectOptions,
    schema: String,
    lock_key: i32,
    channel: String,
    advisory_locks: bool,
    notify: bool,
}

impl PostgresStore {
    /// Connects to the database `url` names and applies pending migrations. Besides sqlx's
    /// parameters (`?options=-c search_path=NAME`, `sslmode`, …) the URL may carry
    /// `posture_schema=NAME`, `posture_advisory_locks=off` and `posture_notify=off`.
    pub async fn open(url: &str) -> Result<Self> {
        let (url, options) = parse_url(url)?;
        Self::open_with(&url, options).await
    }

    /// Like [`open`](Self::open), with the tables in `schema` (created if missing).
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        let (url, mut options) = parse_url(url)?;
        options.schema = Some(schema.to_string());
        Self::open_with(&url, options).await
    }

    /// Connects to `url` (sqlx's syntax, no `posture_*` parameters) as `options` say.
    pub async fn open_with(url: &str, options: PostgresOptions) -> Result<Self> {
        let mut connect =
            PgConnectOptions::from_str(url).map_err(|e| Error::invalid("store", format!("{}: {e}", redact(url))))?;
        // A commit is acknowledged once it is flushed (and, where the cluster has synchronous
        // standbys, replicated): set per session, whatever the server's or database's default.
        connect = connect.options([("synchronous_commit", "on")]);
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
            connect = connect.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect.clone())
            .await
            .map_err(|e| Error::Storage(format!("cannot connect to {}: {e}", redact(url))))?;
        let schema = migrate(&pool, options.schema.as_deref(), options.advisory_locks).await?;
        Ok(PostgresStore {
            pool,
            connect,
            lock_key: schema_key(&schema),
            channel: channel_for(&schema),
            schema,
            advisory_locks: options.advisory_locks,
            notify: options.notify,
        })
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The channel commits NOTIFY and [`Store::notifications`] LISTENs on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    async fn try_commit(
        &self,
        expected: u64,
        rows: &[Row<'_>],
        encoded: &str,
        committed_at: i64,
    ) -> Result<Commit, Failure> {
        let mut tx = self.pool.begin().await?;
        if self.advisory_locks {
            // Released when the transaction ends, after its writes are visible: the head read
            // next stays the head until then.
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(COMMIT_LOCK)
                .bind(self.lock_key)
                .execute(&mut *tx)
                .await?;
            let (head,): (i64,) = sqlx::query_as(sql::MAX_REVISION).fetch_one(&mut *tx).await?;
            if head as u64 != expected {
                return Ok(Commit::Conflict);
            }
        }
        // Without advisory locks the change log's primary key decides: revisions have no
        // gaps, so if `expected` is not the head, `expected + 1` is taken (or is being taken:
        // the insert waits for that transaction and fails once it commits).
        let revision = expected as i64 + 1;
        match sqlx::query(INSERT_LOG).bind(revision).bind(committed_at).bind(encoded).execute(&mut *tx).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => return Ok(Commit::Conflict),
            other => other?,
        };
        sql::write_rows::<Postgres>(&mut tx, rows).await?;
        if self.notify {
            // Delivered at commit, in commit order, to every listener on the channel.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(revision.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await.map_err(Failure::AtCommit)?;
        Ok(Commit::Done(revision as u64))
    }
}

/// How an attempt to commit failed: before COMMIT (nothing was written), or at it (the
/// outcome is unknown).
enum Failure {
    Before(sqlx::Error),
    AtCommit(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Before(e)
    }
}

/// Splits the `posture_*` parameters off a URL; the rest goes to sqlx.
fn parse_url(url: &str) -> Result<(String, PostgresOptions)> {
    let mut options = PostgresOptions::default();
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), options)) };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let flag = || match value {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(Error::invalid("store", format!("{key}={value:?}: expected on or off"))),
        };
        match key {
            "posture_schema" => options.schema = Some(value.to_string()),
            "posture_advisory_locks" => options.advisory_locks = flag()?,
            "posture_notify" => options.notify = flag()?,
            k if k.starts_with("posture_") => {
                return Err(Error::invalid(
                    "store",
                    format!(
                        "unknown URL parameter {k:?}: posture_schema, posture_advisory_locks and posture_notify are known"
                    ),
                ));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, options))
}

/// Schema names are used unquoted in SQL and in the connection's `search_path`.
fn check_schema_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(Error::invalid(
            "store",
            format!("schema {schema:?}: use at most 63 lowercase letters, digits and '_', not starting with a digit"),
        ))
    }
}

/// FNV-1a: stable across builds and replicas, unlike `std`'s hasher.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The second key of the commit lock for `schema`.
fn schema_key(schema: &str) -> i32 {
    let h = fnv1a(schema);
    (h ^ (h >> 32)) as u32 as i32
}

/// NOTIFY channels are per database, not per schema: each schema other than `public` gets
/// its own, so stores in different schemas do not hear each other's revisions.
pub fn channel_for(schema: &str) -> String {
    let named = format!("{CHANNEL}_{schema}");
    match schema {
        "public" => CHANNEL.to_string(),
        // Channel names are at most 63 bytes.
        _ if named.len() <= 63 => named,
        _ => format!("{CHANNEL}_{:016x}", fnv1a(schema)),
    }
}

/// Applies pending migrations, under the migration lock when advisory locks are on, and
/// returns the schema the tables are in. Without the lock, a replica migrating at the same
/// moment makes this one fail; by the next attempt its work is visible.
async fn migrate(pool: &PgPool, create: Option<&str>, locks: bool) -> Result<String> {
    let mut attempt = 1;
    loop {
        match migrate_once(pool, create, locks).await {
            Ok(Some(schema)) => return Ok(schema),
            Ok(None) => {
                return Err(Error::Storage(
                    "no schema to create the tables in: the search_path names none that exists \
                     (create it, or give posture_schema=NAME)"
                        .into(),
                ));
            }
            Err(sqlx::Error::Database(e)) if attempt < MIGRATION_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "migration failed; retrying");
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(Error::Storage(format!("migration failed: {e}"))),
        }
    }
}

async fn migrate_once(pool: &PgPool, create: Option<&str>, locks: bool) -> sqlx::Result<Option<String>> {
    // One transaction (DDL is transactional in PostgreSQL): a failed migration leaves nothing
    // behind, and the transaction-scoped lock cannot outlive it on a pooled connection.
    let mut tx = pool.begin().await?;
    // Not "relation … already exists, skipping" on every start.
    tx.execute("SET LOCAL client_min_messages TO WARNING").await?;
    if locks {
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    }
    if let Some(schema) = create {
        // The name was checked: lowercase letters, digits and '_'.
        tx.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await?;
    }
    let Some(schema) = sqlx::query_scalar::<_, Option<String>>("SELECT current_schema()").fetch_one(&mut *tx).await?
    else {
        return Ok(None);
    };
    tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)").await?;
    sql::apply_migrations::<Postgres>(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(Some(schema))
}

/// Worth trying again: the engine asks for a retry (serialization failure, deadlock).
fn retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40001" | "40P01")))
}

const JSON: JsonArrays = JsonArrays { joined: "string_agg({}, ',')", array: "json_build_array({})::text" };

#[async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin_with(BEGIN_SNAPSHOT).await?;
        let snapshot = snapshot::load::<Postgres>(&mut tx, &JSON).await?;
        tx.commit().await?;
        Ok(snapshot)
    }

    async fn commit(&self, expected: u64, changes: &[Change], committed_at: i64) -> Result<Commit> {
        // Encoded before the transaction, so the lock is held only for the writes.
        let rows = changes.iter().map(row).collect::<Result<Vec<_>>>()?;
        let encoded = encode_changes(changes)?;
        let mut attempt = 1;
        loop {
            match self.try_commit(expected, &rows, &encoded, committed_at).await {
                Err(Failure::Before(e)) if attempt < COMMIT_ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "commit conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(5) * attempt).await;
                    attempt += 1;
                }
                Err(Failure::Before(e)) => return Err(e.into()),
                Err(Failure::AtCommit(e)) => return Err(Error::CommitUnknown(e.to_string())),
                Ok(outcome) => return Ok(outcome),
            }
        }
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<(u64, Vec<Change>)>> {
        sql::changes_since::<Postgres>(&mut *self.pool.acquire().await?, after, limit).await
    }

    async fn committed_at(&self, revision: u64) -> Result<Option<i64>> {
        sql::committed_at::<Postgres>(&mut *self.pool.acquire().await?, revision).await
    }

    async fn compact(&self, keep_from: u64, older_than: i64) -> Result<super::Compaction> {
        sql::compact::<Postgres>(&self.pool, keep_from, older_than).await
    }

    /// A receiver of the revisions committed from now on, by any replica, fed by a
    /// `PgListener` on its own connection. It is listening when this returns, and keeps
    /// listening (reconnecting as needed) until the receiver is dropped.
    async fn notifications(&self) -> Result<Option<Receiver<u64>>> {
        if !self.notify {
            return Ok(None);
        }
        notifications::feed(self.connect.clone(), self.channel.clone()).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A database whose default is `synchronous_commit = off` (which acknowledges commits
    /// before they are durable) still gets durable commits from posture.
    #[tokio::test]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn sessions_commit_synchronously_whatever_the_database_default() {
        let url = std::env::var("POSTURE_TEST_DATABASE_URL").expect("POSTURE_TEST_DATABASE_URL");
        let admin = PgPool::connect(&url).await.unwrap();
        let database = format!("posture_sync_{}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&admin).await.unwrap();
        sqlx::query(&format!("ALTER DATABASE {database} SET synchronous_commit = off")).execute(&admin).await.unwrap();
        let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let at = base.rfind('/').unwrap();
        let url = format!("{}/{database}{}", &base[..at], query.map(|q| format!("?{q}")).unwrap_or_default());
        let store = PostgresStore::open(&url).await.unwrap();
        let setting: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&store.pool).await.unwrap();
        store.pool.close().await;
        sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)")).execute(&admin).await.unwrap();
        assert_eq!(setting, "on");
    }

    #[test]
    fn posture_parameters_are_split_off_the_url() {
        let (url, o) = parse_url("postgres://u@h/db?sslmode=disable&posture_schema=t1&posture_notify=off").expect("ok");
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(o.schema.as_deref(), Some("t1"));
        assert!(o.advisory_locks);
        assert!(!o.notify);
        let (url, o) = parse_url("postgres://h/db?posture_advisory_locks=false").expect("ok");
        assert_eq!(url, "postgres://h/db");
        assert!(!o.advisory_locks);
        assert!(parse_url("postgres://h/db?posture_shema=x").is_err());
        assert!(parse_url("postgres://h/db?posture_notify=maybe").is_err());
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("posture_test_1").is_ok());
        assert!(check_schema_name("_x").is_ok());
        for bad in ["", "1x", "Mixed", "a-b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn channels_are_per_schema() {
        assert_eq!(channel_for("public"), "posture_changes");
        assert_eq!(channel_for("tenant_a"), "posture_changes_tenant_a");
        let long = channel_for(&"x".repeat(63));
        assert!(long.len() <= 63 && long.starts_with("posture_changes_"));
        assert_ne!(schema_key("a"), schema_key("b"));
    }
}
