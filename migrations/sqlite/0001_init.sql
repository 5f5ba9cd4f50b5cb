-- Entities are stored as JSON documents keyed by id, with the columns the indexes need.
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
-- One row per committed write, in the same transaction: the revision and what changed.
CREATE TABLE change_log (
    revision     INTEGER PRIMARY KEY AUTOINCREMENT,
    committed_at INTEGER NOT NULL,
    changes      TEXT NOT NULL
);
