-- The state is read whole into memory at start-up; nothing looks devices up by user or serial
-- number in the database, so these indexes only cost every device write and disk space.
DROP INDEX IF EXISTS devices_user_id;
DROP INDEX IF EXISTS devices_serial_number;
