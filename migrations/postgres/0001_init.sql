-- The same tables as migrations/sqlite/0001_init.sql. Entities are JSON documents (TEXT, not
-- JSONB, so the schema stays portable to PostgreSQL-compatible engines such as CockroachDB
-- and YugabyteDB) keyed by id, with the columns the indexes need.
CREATE TABLE users (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE groups (
    id   TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX devices_user_id ON devices (user_id);
CREATE INDEX devices_serial_number ON devices (serial_number);
CREATE TABLE policies (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE assignments (
    policy_id TEXT PRIMARY KEY,
    body      TEXT NOT NULL
);
-- The connector and the tenant settings.
CREATE TABLE singletons (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
-- One row per committed write, in the same transaction: the revision and what changed. The
-- revision is not a sequence: a commit takes MAX(revision) + 1 while it holds the commit lock
-- (see src/store/postgres.rs), so revisions have no gaps and become visible in order.
CREATE TABLE change_log (
    revision     BIGINT PRIMARY KEY,
    committed_at BIGINT NOT NULL,
    changes      TEXT NOT NULL
);
