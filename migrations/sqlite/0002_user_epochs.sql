-- Per-user session epochs: a password change or revoke-all moves the
-- user's epoch on (in the same transaction as the new password hash, or
-- before revoking what exists), and each session records the epoch its
-- login began under. A session whose epoch is behind its user's is never
-- created and never refreshed, so a login that checked the old password
-- cannot outlive the change.

CREATE TABLE user_epochs (
    user_id TEXT    NOT NULL PRIMARY KEY,
    epoch   INTEGER NOT NULL
) STRICT;

ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
