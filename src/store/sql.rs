//! The SQL that SQLite and PostgreSQL both accept (kept to what PostgreSQL-compatible engines
//! such as CockroachDB and YugabyteDB take as well), and the steps that run it, written once
//! for any sqlx database: writing the rows of changes, reading and compacting the log.
//! What differs between the backends (how a revision is numbered and published, how a
//! transaction begins) stays in `sqlite.rs` and `postgres.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Compaction, Row, decode_changes};
use crate::domain::Change;
use crate::error::{Error, Result};

const MIGRATION_APPLIED: &str = "SELECT version FROM schema_migrations WHERE version = $1";
const RECORD_MIGRATION: &str = "INSERT INTO schema_migrations (version) VALUES ($1)";

/// The latest committed revision, 0 for an empty log.
pub(crate) const MAX_REVISION: &str = "SELECT COALESCE(MAX(revision), 0) FROM change_log";

const CHANGES_SINCE: &str = "SELECT revision, changes FROM change_log WHERE revision > $1 ORDER BY revision LIMIT $2";

const DELETE_USER: &str = "DELETE FROM users WHERE id = $1";
const PUT_GROUP: &str = "INSERT INTO groups (id, kind, body) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, body = excluded.body";
const DELETE_GROUP: &str = "DELETE FROM groups WHERE id = $1";
const DELETE_DEVICE: &str = "DELETE FROM devices WHERE id = $1";
const DELETE_POLICY_FAILING: &str = "DELETE FROM failing WHERE policy_id = $1";
const DELETE_FAILING: &str = "DELETE FROM failing WHERE device_id = $1 AND policy_id = $2";
const PUT_POLICY: &str =
    "INSERT INTO policies (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body";
const DELETE_POLICY: &str = "DELETE FROM policies WHERE id = $1";
const PUT_ASSIGNMENT: &str = "INSERT INTO assignments (policy_id, body) VALUES ($1, $2) \
     ON CONFLICT (policy_id) DO UPDATE SET body = excluded.body";
const DELETE_ASSIGNMENT: &str = "DELETE FROM assignments WHERE policy_id = $1";
const PUT_SINGLETON: &str =
    "INSERT INTO singletons (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body = excluded.body";

/// Applies the `(version, script)` migrations not yet recorded in `schema_migrations`, on
/// `conn`: the caller's transaction, which must hold whatever lock keeps two processes from
/// migrating at once.
pub(crate) async fn apply_migrations<DB>(conn: &mut DB::Connection, migrations: &[(i64, &str)]) -> sqlx::Result<()>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    for &(version, script) in migrations {
        let applied = sqlx::query_as::<DB, (i64,)>(MIGRATION_APPLIED).bind(version).fetch_optional(&mut *conn).await?;
        if applied.is_none() {
            tracing::info!(version, "applying migration");
            // Through `Executor::execute`, which runs every statement of the script, not
            // `raw_sql(script).execute(..)`: that future is not provably `Send` (a rustc
            // higher-ranked lifetime limitation), which made `server::serve` impossible to spawn.
            conn.execute(script).await?;
            if version == FAILING_TABLE {
                move_failing_out_of_devices::<DB>(conn).await?;
            }
            sqlx::query::<DB>(RECORD_MIGRATION).bind(version).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// The migration that made grace-period bookkeeping a table of its own.
const FAILING_TABLE: i64 = 2;

/// Copies the bookkeeping that devices' JSON bodies used to carry (`"failing_since": {policy:
/// seconds}`) into the `failing` table, each grace period ending the policy's grace period
/// after its start. (Bodies keep the old key; reading a device ignores it.)
async fn move_failing_out_of_devices<DB>(conn: &mut DB::Connection) -> sqlx::Result<()>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).ok();
    let policies =
        sqlx::query_as::<DB, (String, String)>("SELECT id, body FROM policies").fetch_all(&mut *conn).await?;
    let grace_hours: HashMap<String, i64> = policies
        .iter()
        .filter_map(|(id, body)| Some((id.clone(), json(body)?.get("grace_period_hours")?.as_i64()?)))
        .collect();
    let sql = r#"SELECT id, body FROM devices WHERE body LIKE '%"failing_since":{"%'"#;
    let devices = sqlx::query_as::<DB, (String, String)>(sql).fetch_all(&mut *conn).await?;
    let mut records: Vec<(String, String, i64, i64)> = Vec::new();
    for (device_id, body) in devices {
        let Some(value) = json(&body) else { continue };
        let Some(failing) = value.get("failing_since").and_then(|f| f.as_object()) else { continue };
        for (policy_id, since) in failing {
            if let Some(since) = since.as_i64() {
                let ends = since.saturating_add(grace_hours.get(policy_id).copied().unwrap_or(0) * 3600);
                records.push((device_id.clone(), policy_id.clone(), since, ends));
            }
        }
    }
    let rows: Vec<Row<'_>> = records
        .iter()
        .map(|(device_id, policy_id, since, ends)| Row::Failing { device_id, policy_id, times: Some((*since, *ends)) })
        .collect();
    tracing::info!(records = rows.len(), "moved grace-period bookkeeping out of device records");
    write_rows::<DB>(conn, &rows).await
}

/// A statement parameter.
#[derive(Clone, Copy)]
pub(crate) enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

type Statement<'a> = (Cow<'static, str>, Vec<Param<'a>>);

/// The statements, with their parameters in order, that write one row. (Upserts of users,
/// devices and failures usually go out several rows at a time: see [`write_rows`].)
fn statements<'a>(row: &'a Row<'a>) -> Vec<Statement<'a>> {
    use Param::Text;
    fn one<'a>(sql: &'static str, params: Vec<Param<'a>>) -> Vec<Statement<'a>> {
        vec![(Cow::Borrowed(sql), params)]
    }
    if let Some((kind, _, params)) = batchable(row) {
        return vec![(multi_row_sql(kind, 1, true).into(), params)];
    }
    match row {
        Row::User(id, _) => one(DELETE_USER, vec![Text(id)]),
        Row::Group(id, kind, Some(body)) => one(PUT_GROUP, vec![Text(id), Text(kind), Text(body)]),
        Row::Group(id, _, None) => one(DELETE_GROUP, vec![Text(id)]),
        // A deleted device keeps its failures: the Mac's next report continues them.
        Row::Device { id, .. } | Row::DeleteDevice(id) => one(DELETE_DEVICE, vec![Text(id)]),
        Row::CheckIn { .. } => unreachable!("a check-in is batchable"),
        Row::Policy(id, Some(body)) => one(PUT_POLICY, vec![Text(id), Text(body)]),
        // A deleted policy takes its assignment and its failures with it.
        Row::Policy(id, None) => vec![
            (DELETE_ASSIGNMENT.into(), vec![Text(id)]),
            (DELETE_POLICY_FAILING.into(), vec![Text(id)]),
            (DELETE_POLICY.into(), vec![Text(id)]),
        ],
        Row::Assignment(id, Some(body)) => one(PUT_ASSIGNMENT, vec![Text(id), Text(body)]),
        Row::Assignment(id, None) => one(DELETE_ASSIGNMENT, vec![Text(id)]),
        Row::Singleton(name, body) => one(PUT_SINGLETON, vec![Text(name), Text(body)]),
        Row::Failing { device_id, policy_id, .. } => one(DELETE_FAILING, vec![Text(device_id), Text(policy_id)]),
    }
}

/// Runs of these writes are sent as one multi-row statement: the SQL before the rows, the SQL
/// after them, and the parameters per row.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MultiRow {
    head: &'static str,
    tail: &'static str,
    width: usize,
}

const USER_ROWS: MultiRow = MultiRow {
    head: "INSERT INTO users (id, body) VALUES ",
    tail: " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
    width: 2,
};
/// A full report's body holds its check-in, so the check-in column goes back to NULL.
const DEVICE_ROWS: MultiRow = MultiRow {
    head: "INSERT INTO devices (id, user_id, serial_number, body) VALUES ",
    tail: " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
     serial_number = excluded.serial_number, body = excluded.body, last_check_in = NULL",
    width: 4,
};
/// A check-in writes one column of a device's row, not its body again. (`column1`, `column2`
/// name the columns of a VALUES list in SQLite and in PostgreSQL alike.)
const CHECK_IN_ROWS: MultiRow = MultiRow {
    head: "UPDATE devices SET last_check_in = v.column2 FROM (VALUES ",
    tail: ") AS v WHERE devices.id = v.column1",
    width: 2,
};
const FAILING_ROWS: MultiRow = MultiRow {
    head: "INSERT INTO failing (device_id, policy_id, since, grace_ends) VALUES ",
    tail: " ON CONFLICT (device_id, policy_id) DO UPDATE SET since = excluded.since, grace_ends = excluded.grace_ends",
    width: 4,
};
/// Rows per multi-row statement (well under both dialects' parameter limits).
const ROWS_PER_STATEMENT: usize = 500;

/// The statement for `rows` rows of one kind: `INSERT INTO t (…) VALUES ($1, …), (…) ON
/// CONFLICT …` (or `UPDATE … FROM (VALUES …)`), or with anonymous `?` parameters when not
/// `numbered`: SQLite looks a numbered parameter's name up in a list as long as the
/// statement's parameters, once a parameter as they are bound, so a statement of 2,000 of
/// them spent more time binding than writing.
fn multi_row_sql(MultiRow { head, tail, width }: MultiRow, rows: usize, numbered: bool) -> String {
    use std::fmt::Write;
    let mut sql = head.to_string();
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=width {
            if c > 1 {
                sql.push_str(", ");
            }
            match numbered {
                true => write!(sql, "${}", r * width + c).expect("writing to a String"),
                false => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// The multi-row form a row can join, with its key and parameters, if any.
fn batchable<'a>(row: &'a Row<'a>) -> Option<(MultiRow, (&'a str, &'a str), Vec<Param<'a>>)> {
    use Param::{Int, Text};
    match row {
        Row::User(id, Some(body)) => Some((USER_ROWS, (id, ""), vec![Text(id), Text(body)])),
        Row::Device { id, user_id, serial, body: Some(body) } => {
            Some((DEVICE_ROWS, (id, ""), vec![Text(id), Text(user_id), Text(serial), Text(body)]))
        }
        Row::CheckIn { id, at } => Some((CHECK_IN_ROWS, (id, ""), vec![Text(id), Int(*at)])),
        Row::Failing { device_id, policy_id, times: Some((since, ends)) } => Some((
            FAILING_ROWS,
            (device_id, policy_id),
            vec![Text(device_id), Text(policy_id), Int(*since), Int(*ends)],
        )),
        _ => None,
    }
}

fn bind_all<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, DB::Arguments<'q>>,
    params: Vec<Param<'q>>,
) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    for p in params {
        query = match p {
            Param::Text(t) => query.bind(t),
            Param::Int(i) => query.bind(i),
        };
    }
    query
}

/// Writes the rows, in order, on `conn` (the caller's transaction). Consecutive upserts of one
/// kind go out as multi-row statements, one round trip per few hundred rows; a key repeated
/// within a run starts a new statement (one statement may not touch a row twice).
pub(crate) async fn write_rows<DB>(conn: &mut DB::Connection, rows: &[Row<'_>]) -> sqlx::Result<()>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut i = 0;
    while i < rows.len() {
        if let Some((kind, _, _)) = batchable(&rows[i]) {
            let mut keys = std::collections::HashSet::new();
            let mut params = Vec::new();
            while let Some((k, key, p)) = rows.get(i).and_then(batchable) {
                if k != kind || keys.len() == ROWS_PER_STATEMENT || !keys.insert(key) {
                    break;
                }
                params.extend(p);
                i += 1;
            }
            let sql = multi_row_sql(kind, keys.len(), DB::NAME != "SQLite");
            bind_all(sqlx::query::<DB>(&sql), params).execute(&mut *conn).await?;
            continue;
        }
        for (sql, params) in statements(&rows[i]) {
            bind_all(sqlx::query::<DB>(&sql), params).execute(&mut *conn).await?;
        }
        i += 1;
    }
    Ok(())
}

/// The committed revisions after `after`, oldest first, at most `limit`.
pub(crate) async fn changes_since<DB>(
    conn: &mut DB::Connection,
    after: u64,
    limit: u32,
) -> Result<Vec<(u64, Vec<Change>)>>
where
    DB: Database,
    i64: for<'q> Encode<'q, DB> + Type<DB> + for<'r> Decode<'r, DB>,
    for<'r> (i64, String): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let rows = sqlx::query_as::<DB, (i64, String)>(CHANGES_SINCE)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    // Revisions have no gaps, so a first row past `after + 1` means the ones between were
    // compacted away.
    if let Some((first, _)) = rows.first()
        && *first as u64 != after + 1
    {
        return Err(Error::LogCompacted { oldest: *first as u64 });
    }
    rows.into_iter().map(|(revision, changes)| Ok((revision as u64, decode_changes(&changes)?))).collect()
}

/// When `revision` was committed, if the log still keeps it.
pub(crate) async fn committed_at<DB>(conn: &mut DB::Connection, revision: u64) -> Result<Option<i64>>
where
    DB: Database,
    i64: for<'q> Encode<'q, DB> + Type<DB> + for<'r> Decode<'r, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let Ok(revision) = i64::try_from(revision) else { return Ok(None) };
    let row = sqlx::query_as::<DB, (i64,)>("SELECT committed_at FROM change_log WHERE revision = $1")
        .bind(revision)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(at,)| at))
}

const COMPACT: &str = "DELETE FROM change_log WHERE revision IN \
     (SELECT revision FROM change_log WHERE revision < $1 AND committed_at < $2 \
      AND revision < (SELECT MAX(revision) FROM change_log) ORDER BY revision LIMIT $3) \
     RETURNING revision";

/// Deletes the change log's rows before revision `keep_from` that were committed before
/// `older_than` (seconds), a bounded number per statement so that writers never wait long.
pub(crate) async fn compact<DB>(pool: &sqlx::Pool<DB>, keep_from: u64, older_than: i64) -> Result<Compaction>
where
    DB: Database,
    i64: for<'q> Encode<'q, DB> + Type<DB> + for<'r> Decode<'r, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    const BATCH: i64 = 1_000;
    let mut deleted = 0;
    loop {
        let started = Instant::now();
        // A connection a statement, so that the rests hold none.
        let mut conn = pool.acquire().await?;
        let rows = sqlx::query_as::<DB, (i64,)>(COMPACT)
            .bind(i64::try_from(keep_from).unwrap_or(i64::MAX))
            .bind(older_than)
            .bind(BATCH)
            .fetch_all(&mut *conn)
            .await?;
        deleted += rows.len() as u64;
        if (rows.len() as i64) < BATCH {
            let (oldest,) = sqlx::query_as::<DB, (i64,)>("SELECT COALESCE(MIN(revision), 0) FROM change_log")
                .fetch_one(&mut *conn)
                .await?;
            return Ok(Compaction { deleted, oldest: oldest as u64 });
        }
        drop(conn);
        rest_after(started).await;
    }
}

/// The longest rest between two statements of background maintenance.
const MAX_REST: Duration = Duration::from_millis(200);

/// Background maintenance (compacting the change log, freeing its pages) rests four times as
/// long as its last statement took before the next: it takes about a fifth of the time of the
/// core it shares with the calls. (A replica that started on a store holding a long
/// backlog deleted 86 MB of log rows at once, 0.45 s of a core's time at one go: every call
/// waited behind it.)
pub(crate) async fn rest_after(started: Instant) {
    tokio::time::sleep((started.elapsed() * 4).min(MAX_REST)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_upserts_number_their_parameters_or_leave_them_anonymous() {
        let conflict = " ON CONFLICT (id) DO UPDATE SET body = excluded.body";
        assert_eq!(
            multi_row_sql(CHECK_IN_ROWS, 2, false),
            "UPDATE devices SET last_check_in = v.column2 FROM (VALUES (?, ?), (?, ?)) AS v WHERE devices.id = v.column1"
        );
        assert_eq!(
            multi_row_sql(USER_ROWS, 2, true),
            format!("INSERT INTO users (id, body) VALUES ($1, $2), ($3, $4){conflict}")
        );
        assert_eq!(
            multi_row_sql(USER_ROWS, 2, false),
            format!("INSERT INTO users (id, body) VALUES (?, ?), (?, ?){conflict}")
        );
    }
}
