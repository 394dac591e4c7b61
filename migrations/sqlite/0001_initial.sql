-- The embedded store's schema, version 1.
--
-- Every instant is an INTEGER of nanoseconds since the Unix epoch (UTC):
-- exact for the model's `OffsetDateTime`s, and comparable in SQL for the
-- deadline checks. Tokens are never stored: only their SHA-256 digests
-- (32-byte BLOBs) and, for the grace window, the successor sealed under a
-- server key. Tables are STRICT so a value of the wrong type is refused on
-- write rather than discovered on read.

CREATE TABLE sessions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    user_id             TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    idle_expires_at     INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    ip                  TEXT,
    user_agent          TEXT,
    metadata            TEXT    NOT NULL,   -- JSON
    generation          INTEGER NOT NULL,
    current_digest      BLOB    NOT NULL,   -- SHA-256 of the live refresh token
    previous_digest     BLOB,               -- SHA-256 of the token rotated away last
    rotated_at          INTEGER,
    grace_successor     BLOB,               -- sealed successor, grace window only
    recent_refreshes    TEXT    NOT NULL,   -- JSON array of nanosecond instants
    revoked_at          INTEGER,
    revoked_reason      TEXT,
    version             INTEGER NOT NULL,
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
) STRICT;

-- A user's sessions, oldest first (list, revoke-all, the per-user limit).
CREATE INDEX sessions_user ON sessions (user_id, created_at);
-- The purge: a session's record dies at the earlier of its two deadlines.
CREATE INDEX sessions_expiry ON sessions (min(idle_expires_at, absolute_expires_at));

CREATE TABLE users (
    username      TEXT    NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,   -- argon2id PHC string, never a password
    created_at    INTEGER NOT NULL
) STRICT;

-- Append-only. `seq` orders the log (newest first = highest seq) and is the
-- keyset for pagination; `id` is the event's own UUID, unique so that a
-- retried append is a no-op.
CREATE TABLE audit_events (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    session_id TEXT,
    user_id    TEXT,
    actor      TEXT    NOT NULL,
    ip         TEXT,
    user_agent TEXT,
    reason     TEXT,
    details    TEXT    NOT NULL   -- JSON
) STRICT;

CREATE INDEX audit_events_user    ON audit_events (user_id, seq DESC);
CREATE INDEX audit_events_session ON audit_events (session_id, seq DESC);
CREATE INDEX audit_events_kind    ON audit_events (kind, seq DESC);
CREATE INDEX audit_events_at      ON audit_events (at);

-- The log is append-only: the database itself refuses edits and deletions.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
