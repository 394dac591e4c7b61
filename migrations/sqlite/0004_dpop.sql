-- DPoP (RFC 9449), contract v1.1.
--
-- A session may be bound to the thumbprint (RFC 7638, 43 characters of
-- base64url) of its client's DPoP key; older rows are unbound (NULL).
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT CHECK (dpop_jkt IS NULL OR length(dpop_jkt) = 43);

-- The `jti` replay set: one row per accepted proof, keyed by the SHA-256
-- of its key thumbprint and `jti` (never the proof), kept until the proof
-- could no longer be accepted; the purge drops older rows.
CREATE TABLE dpop_proofs (
    key        BLOB    NOT NULL PRIMARY KEY,   -- 32 bytes
    expires_at INTEGER NOT NULL                -- nanoseconds since the Unix epoch
) STRICT, WITHOUT ROWID;

CREATE INDEX dpop_proofs_expiry ON dpop_proofs (expires_at);
