-- The server checks (never applies) the schema at start: it reads the
-- migration history to see that every migration of its build is applied.
-- The owner applies migrations (`session-server migrate`); the service's
-- role only needs to read that table.
-- Forward-only: this file is never edited.

GRANT SELECT ON _sqlx_migrations TO session_service;
