-- The same table as migrations/sqlite/0002_failing.sql: per device and failing policy, when
-- its failure began to count (it used to live inside each device's JSON body).
CREATE TABLE failing (
    device_id  TEXT NOT NULL,
    policy_id  TEXT NOT NULL,
    since      BIGINT NOT NULL,
    grace_ends BIGINT NOT NULL,
    PRIMARY KEY (device_id, policy_id)
);
CREATE INDEX failing_policy_id ON failing (policy_id);
