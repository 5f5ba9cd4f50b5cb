//! Reading the whole state at start-up, for either SQL backend. Rows come a few thousand at a
//! time as one JSON array each (the database joins them), one thread decodes them and another
//! applies them while the database reads the next: row by row, SQLite's driver hands each row
//! across threads (microseconds a row, a million rows a table), and one thread would do all the
//! decoding and applying.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};
use tokio::sync::mpsc::{Receiver, Sender, channel};

use super::{Snapshot, decode, records};
use crate::domain::model::{self as m, Failure, Timestamp};
use crate::domain::{Change, State};
use crate::error::{Error, Result};

/// How a backend's SQL makes one JSON array of many rows: templates with `{}` for the
/// argument. The bodies are JSON already (this build or an earlier one wrote them), so the
/// array is their text joined by commas, not parsed again.
pub(crate) struct JsonArrays {
    /// Text values joined by commas (e.g. `group_concat({}, ',')`); NULL for no rows.
    pub joined: &'static str,
    /// A JSON array of several values, as text (e.g. `json_array({})`).
    pub array: &'static str,
}

/// What a table's rows hold, and so how its arrays are applied.
#[derive(Clone, Copy)]
enum Kind {
    Users,
    Groups,
    Policies,
    Assignments,
    Devices,
    Failing,
}

/// A table read in chunks of `rows` rows, in the order of `key`.
struct Source {
    kind: Kind,
    table: &'static str,
    key: &'static str,
    rows: u32,
}

/// Devices last, after the users and groups they are decided against; their failures after
/// them.
const SOURCES: [Source; 6] = [
    Source { kind: Kind::Users, table: "users", key: "id", rows: 5_000 },
    Source { kind: Kind::Groups, table: "groups", key: "id", rows: 200 },
    Source { kind: Kind::Policies, table: "policies", key: "id", rows: 1_000 },
    Source { kind: Kind::Assignments, table: "assignments", key: "policy_id", rows: 1_000 },
    Source { kind: Kind::Devices, table: "devices", key: "id", rows: 5_000 },
    Source { kind: Kind::Failing, table: "failing", key: "device_id", rows: 20_000 },
];

const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM devices)";
const SINGLETONS: &str = "SELECT name, body FROM singletons";

/// Chunks waiting to be applied while the next is read.
const QUEUED: usize = 4;

impl Source {
    /// The query for the rows after key `$1`, at most `$2` of them (for failures: whole
    /// devices, so a device's failures never straddle two chunks, and so a few more than `$2`
    /// when the last device has several): the array, and the last key it holds (NULL past the
    /// end).
    fn sql(&self, json: &JsonArrays) -> String {
        let (table, key) = (self.table, self.key);
        let (value, rows) = match self.kind {
            // Up to the device of the `$2`-th row (or the last): two index range scans, where
            // picking `$2` distinct devices first made PostgreSQL hash every row after `$1`.
            Kind::Failing => (
                json.array.replace("{}", "device_id, policy_id, since, grace_ends"),
                "SELECT device_id, policy_id, since, grace_ends FROM failing WHERE device_id > $1 AND device_id <= \
                 COALESCE((SELECT device_id FROM failing WHERE device_id > $1 ORDER BY device_id LIMIT 1 OFFSET $2 - 1), \
                 (SELECT MAX(device_id) FROM failing))"
                    .to_string(),
            ),
            // Each device as `[body, check-in column]`: the column, when set, is its check-in.
            Kind::Devices => (
                "'[' || body || ',' || COALESCE(CAST(last_check_in AS TEXT), 'null') || ']'".to_string(),
                format!("SELECT {key}, body, last_check_in FROM {table} WHERE {key} > $1"),
            ),
            _ => ("body".to_string(), format!("SELECT {key}, body FROM {table} WHERE {key} > $1")),
        };
        let limit = match self.kind {
            Kind::Failing => "",
            _ => " LIMIT $2",
        };
        let joined = json.joined.replace("{}", &value);
        format!("SELECT '[' || {joined} || ']', MAX({key}) FROM ({rows} ORDER BY {key}{limit}) AS chunk")
    }
}

/// Every entity and the latest revision. `conn` should be a transaction that reads one
/// snapshot, or the tables and the revision may disagree.
pub(crate) async fn load<DB>(conn: &mut DB::Connection, json: &JsonArrays) -> Result<Snapshot>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'r> (Option<String>, Option<String>): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (i64, i64): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let (users, devices) = sqlx::query_as::<DB, (i64, i64)>(COUNTS).fetch_one(&mut *conn).await?;
    let (chunks, queue) = channel::<(Kind, String)>(QUEUED);
    let (decoded, changes) = channel::<Vec<Change>>(QUEUED);
    let decoder = tokio::task::spawn_blocking(move || decode_all(queue, &decoded));
    let applier = tokio::task::spawn_blocking(move || restore_all(changes, users as usize, devices as usize));
    let read = read_all::<DB>(conn, json, &chunks).await;
    drop(chunks);
    let failed = |e: tokio::task::JoinError| Error::Storage(format!("loading the state failed: {e}"));
    // The decoder's error explains a read that stopped because it had gone.
    let decoded = decoder.await.map_err(failed)?;
    let mut state = applier.await.map_err(failed)?;
    decoded?;
    read?;
    for (name, body) in sqlx::query_as::<DB, (String, String)>(SINGLETONS).fetch_all(&mut *conn).await? {
        state.restore(singleton(&name, &body)?);
    }
    let (revision,) = sqlx::query_as::<DB, (i64,)>(super::sql::MAX_REVISION).fetch_one(&mut *conn).await?;
    tracing::info!(
        users = state.user_count(),
        groups = state.groups().count(),
        devices = state.device_count(),
        revision,
        "state loaded"
    );
    Ok(Snapshot { state, revision: revision as u64 })
}

async fn read_all<DB>(conn: &mut DB::Connection, json: &JsonArrays, chunks: &Sender<(Kind, String)>) -> Result<()>
where
    DB: Database,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (Option<String>, Option<String>): FromRow<'r, DB::Row>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    for source in &SOURCES {
        let (started, mut waited) = (std::time::Instant::now(), std::time::Duration::ZERO);
        let sql = source.sql(json);
        // Keys are non-empty text, so every key is after "".
        let mut after = String::new();
        loop {
            let (array, last) = sqlx::query_as::<DB, (Option<String>, Option<String>)>(&sql)
                .bind(after.as_str())
                .bind(i64::from(source.rows))
                .fetch_one(&mut *conn)
                .await?;
            let (Some(array), Some(last)) = (array, last) else { break };
            // An applier gone has failed, and says why.
            let queued = std::time::Instant::now();
            if chunks.send((source.kind, array)).await.is_err() {
                return Ok(());
            }
            waited += queued.elapsed();
            after = last;
        }
        // Waiting on a full queue: applying, not reading, is what holds the load up.
        tracing::debug!(table = source.table, elapsed = ?started.elapsed(), waited = ?waited, "read");
    }
    Ok(())
}

/// Each chunk's changes, in the order read; stops at the first that does not decode.
fn decode_all(mut queue: Receiver<(Kind, String)>, decoded: &Sender<Vec<Change>>) -> Result<()> {
    while let Some((kind, array)) = queue.blocking_recv() {
        let changes = match kind {
            Kind::Users => puts::<records::User, _>(&array, Change::PutUser)?,
            Kind::Groups => puts::<records::Group, _>(&array, Change::PutGroup)?,
            Kind::Policies => puts::<records::Policy, _>(&array, Change::PutPolicy)?,
            Kind::Assignments => puts::<records::Assignment, _>(&array, Change::PutAssignment)?,
            Kind::Devices => {
                let rows: Vec<(records::Device, Option<i64>)> = serde_json::from_str(&array).map_err(corrupt)?;
                let devices = rows.into_iter().map(|(record, checked_in)| {
                    let mut device = m::Device::try_from(record)?;
                    if let Some(at) = checked_in {
                        device.last_check_in = Timestamp(at);
                    }
                    Ok(Change::PutDevice(device))
                });
                devices.collect::<Result<_>>()?
            }
            Kind::Failing => {
                let rows: Vec<(String, String, i64, i64)> = serde_json::from_str(&array).map_err(corrupt)?;
                let failing = rows.into_iter().map(|(device_id, policy_id, since, ends)| {
                    let failure = Failure { since: Timestamp(since), grace_ends: Timestamp(ends) };
                    Change::PutFailing { device_id, policy_id, failure }
                });
                failing.collect()
            }
        };
        if decoded.blocking_send(changes).is_err() {
            break;
        }
    }
    Ok(())
}

/// The state the changes make, applied in the order read (on a thread of its own, so that
/// decoding the next chunk and applying this one overlap).
fn restore_all(mut changes: Receiver<Vec<Change>>, users: usize, devices: usize) -> State {
    let mut state = State::default();
    state.reserve(users, devices);
    while let Some(chunk) = changes.blocking_recv() {
        for change in chunk {
            state.restore(change);
        }
    }
    state
}

/// The change `put` makes of each record of a JSON array.
fn puts<'de, R, D>(array: &'de str, put: fn(D) -> Change) -> Result<Vec<Change>>
where
    R: serde::Deserialize<'de>,
    D: TryFrom<R, Error = Error>,
{
    let records: Vec<R> = serde_json::from_str(array).map_err(corrupt)?;
    records.into_iter().map(|r| Ok(put(D::try_from(r)?))).collect()
}

fn corrupt(e: serde_json::Error) -> Error {
    Error::Storage(format!("corrupt row: {e}"))
}

fn singleton(name: &str, body: &str) -> Result<Change> {
    Ok(match name {
        "connector" => Change::PutConnector(decode::<records::Connector, _>(body)?),
        "settings" => Change::PutSettings(decode::<records::Settings, _>(body)?),
        "heartbeat" => Change::PutHeartbeat(Timestamp(
            body.parse().map_err(|_| Error::Storage(format!("corrupt row: heartbeat {body:?}")))?,
        )),
        other => return Err(Error::Storage(format!("unknown singleton {other:?}"))),
    })
}
