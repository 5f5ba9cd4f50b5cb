-- Grace-period bookkeeping: per device and failing policy, when its failure began to count
-- and when its grace period ends.
-- (It used to live inside each device's JSON body, as "failing_since"; the migration moves it.)
CREATE TABLE failing (
    device_id  TEXT NOT NULL,
    policy_id  TEXT NOT NULL,
    since      INTEGER NOT NULL,
    grace_ends INTEGER NOT NULL,
    PRIMARY KEY (device_id, policy_id)
);
CREATE INDEX failing_policy_id ON failing (policy_id);
