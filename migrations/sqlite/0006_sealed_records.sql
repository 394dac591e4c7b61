-- Session records encrypted at rest, contract v1.1 ("At rest").
--
-- The private fields of a session (IP, user agent, metadata, location and
-- DPoP thumbprint) sealed together (XChaCha20-Poly1305, the session id as
-- associated data) under a key derived from the server's token secret.
-- Where `sealed` is set, the clear columns of those fields are empty. Rows
-- written before stay readable in the clear until their next write.
ALTER TABLE sessions ADD COLUMN sealed BLOB;
