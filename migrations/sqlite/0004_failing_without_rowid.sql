-- Grace-period bookkeeping as a WITHOUT ROWID table: its rows are a few dozen bytes, and a
-- rowid table stored each key twice (in the row and in the primary key's index), a
-- fortieth of the file at a million Macs.
CREATE TABLE failing_by_device (
    device_id  TEXT NOT NULL,
    policy_id  TEXT NOT NULL,
    since      INTEGER NOT NULL,
    grace_ends INTEGER NOT NULL,
    PRIMARY KEY (device_id, policy_id)
) WITHOUT ROWID;
INSERT INTO failing_by_device (device_id, policy_id, since, grace_ends)
    SELECT device_id, policy_id, since, grace_ends FROM failing;
DROP TABLE failing;
ALTER TABLE failing_by_device RENAME TO failing;
CREATE INDEX failing_policy_id ON failing (policy_id);
