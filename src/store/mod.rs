//! Durable storage behind one trait. A commit writes the changes and one change-log row with
//! the new revision in one transaction; it returns only once that is on disk.

use async_trait::async_trait;

use crate::domain::{Change, State};
use crate::error::{Error, Result};

pub mod memory;
pub mod postgres;
mod records;
mod snapshot;
mod sql;
pub mod sqlite;

pub(crate) use records::{decode, decode_changes, encode, encode_changes};

/// What became of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Committed as this revision (the expected head + 1).
    Done(u64),
    /// Another writer committed after the expected head: nothing was written. Catch up,
    /// validate again and retry.
    Conflict,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Revisions deleted.
    pub deleted: u64,
    /// The oldest revision kept (0: the log is empty).
    pub oldest: u64,
}

/// Everything the store holds, as of one revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub state: State,
    pub revision: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Loads every entity and the latest revision.
    async fn load(&self) -> Result<Snapshot>;
    /// Durably commits `changes` as revision `expected + 1`, but only if `expected` is still
    /// the latest revision: the changes were validated against the state at `expected`, and
    /// a write committed since could make them wrong (two creates of one id, an assignment
    /// of a policy just deleted). A failure of the commit itself, when it may or may not have
    /// taken effect, is `Error::CommitUnknown`.
    async fn commit(&self, expected: u64, changes: &[Change], committed_at: i64) -> Result<Commit>;
    /// The committed revisions after `after`, oldest first, at most `limit`; `LogCompacted`
    /// when the next of them is no longer kept (load the state instead).
    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<(u64, Vec<Change>)>>;
    /// When `revision` was committed (seconds since the epoch), if the log still keeps it.
    async fn committed_at(&self, revision: u64) -> Result<Option<i64>>;
    /// Deletes the change log's revisions before `keep_from` committed before `older_than`
    /// (seconds since the epoch); the latest revision always stays.
    async fn compact(&self, keep_from: u64, older_than: i64) -> Result<Compaction>;
    /// A feed of "revision N has been committed", from any process sharing the store, or
    /// `None` when the backend has none (SQLite, memory) and callers must poll
    /// `changes_since`. A value is a hint, not the data: read `changes_since` from the last
    /// revision you applied. Values may be skipped when the receiver falls behind, and after a
    /// lost connection the feed sends an older revision (or 0) meaning "re-check".
    async fn notifications(&self) -> Result<Option<tokio::sync::mpsc::Receiver<u64>>>;
}

/// The table and key a change writes, and its JSON document (`None` deletes).
pub(crate) enum Row<'a> {
    User(&'a str, Option<String>),
    Group(&'a str, &'static str, Option<String>),
    Device {
        id: &'a str,
        user_id: &'a str,
        serial: &'a str,
        body: Option<String>,
    },
    /// A new check-in time for a stored device (its body keeps the one of its last full report).
    CheckIn {
        id: &'a str,
        at: i64,
    },
    DeleteDevice(&'a str),
    Policy(&'a str, Option<String>),
    Assignment(&'a str, Option<String>),
    Singleton(&'static str, String),
    /// A (device, policy) failure: when it began to count and when its grace ends (seconds);
    /// `None` deletes it.
    Failing {
        device_id: &'a str,
        policy_id: &'a str,
        times: Option<(i64, i64)>,
    },
}

/// How each change maps onto the tables, shared by every backend.
pub(crate) fn row(change: &Change) -> Result<Row<'_>> {
    use crate::domain::model::GroupKind;
    Ok(match change {
        Change::PutUser(u) => Row::User(&u.id, Some(encode::<_, records::User>(u)?)),
        Change::DeleteUser(id) => Row::User(id, None),
        Change::PutGroup(g) => {
            let kind = match g.kind {
                GroupKind::User => "user",
                GroupKind::Device => "device",
            };
            Row::Group(&g.id, kind, Some(encode::<_, records::Group>(g)?))
        }
        Change::DeleteGroup(id) => Row::Group(id, "", None),
        Change::PutDevice(d) => {
            let body = Some(encode::<_, records::Device>(d)?);
            Row::Device { id: &d.id, user_id: &d.user_id, serial: &d.serial_number, body }
        }
        Change::CheckIn { device_id, at } => Row::CheckIn { id: device_id, at: at.0 },
        Change::DeleteDevice(id) => Row::DeleteDevice(id),
        Change::PutPolicy(p) => Row::Policy(&p.id, Some(encode::<_, records::Policy>(p)?)),
        Change::DeletePolicy(id) => Row::Policy(id, None),
        Change::PutAssignment(a) => {
            let empty = a.include_group_ids.is_empty() && a.exclude_group_ids.is_empty();
            Row::Assignment(&a.policy_id, if empty { None } else { Some(encode::<_, records::Assignment>(a)?) })
        }
        Change::PutConnector(c) => Row::Singleton("connector", encode::<_, records::Connector>(c)?),
        Change::PutSettings(s) => Row::Singleton("settings", encode::<_, records::Settings>(s)?),
        Change::PutHeartbeat(t) => Row::Singleton("heartbeat", t.0.to_string()),
        Change::PutFailing { device_id, policy_id, failure } => {
            Row::Failing { device_id, policy_id, times: Some((failure.since.0, failure.grace_ends.0)) }
        }
        Change::DeleteFailing { device_id, policy_id } => Row::Failing { device_id, policy_id, times: None },
    })
}

/// Opens the store a URL names: `sqlite://PATH` (the embedded default), `postgres://…` or
/// `postgresql://…` (shared by replicas; see [`postgres::PostgresStore::open`] for the
/// options), or `memory://`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url == "memory://" {
        return Ok(std::sync::Arc::new(memory::MemoryStore::default()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(std::sync::Arc::new(sqlite::SqliteStore::open(std::path::Path::new(path)).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(postgres::PostgresStore::open(url).await?));
    }
    Err(Error::invalid(
        "store",
        format!("unsupported store URL {:?}: use sqlite://FILE, postgres://HOST/DATABASE or memory://", redact(url)),
    ))
}

/// The URL without its password (`user:***@host`, `password=***`), for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let (url, query) = url.split_once('?').map_or((url, None), |(u, q)| (u, Some(q)));
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((credentials, host)) if credentials.contains(':') => {
                    let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
                    format!("{scheme}://{user}:***@{host}{path}")
                }
                _ => format!("{scheme}://{rest}"),
            }
        }
        None => url.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{out}?{}", pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?user=u&password=secret"), "postgres://h/db?user=u&password=***");
        assert_eq!(redact("sqlite://./data/posture.db"), "sqlite://./data/posture.db");
        assert_eq!(redact("mysql:x"), "mysql:x");
    }
}
