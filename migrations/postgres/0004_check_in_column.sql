-- A report that changes nothing but a Mac's check-in time writes this column, not the device's
-- body again. NULL: the body's check-in stands (a full report sets it back to NULL).
ALTER TABLE devices ADD COLUMN last_check_in BIGINT;
