-- Until when the sealed grace successor may be kept: the end of the grace
-- window after the rotation that sealed it (or the session's deadline
-- where the window is not known). Past it the successor is cleared on the
-- next refresh of the session and by the periodic purge, so the file never
-- holds the live refresh token, even sealed, beyond the window.

ALTER TABLE sessions ADD COLUMN grace_until INTEGER;

CREATE INDEX sessions_grace ON sessions (grace_until) WHERE grace_until IS NOT NULL;
