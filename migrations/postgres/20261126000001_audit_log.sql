-- The audit log: append-only, hash-chained (see crates/session-store-postgres/README.md).
-- Forward-only: later changes come as new, higher-numbered files; this one is never edited.

CREATE TABLE audit_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid        NOT NULL UNIQUE,
    at          timestamptz NOT NULL,
    kind        text        NOT NULL,
    session_id  text,
    user_id     text,
    actor       text        NOT NULL,
    ip          text,
    user_agent  text,
    reason      text,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        bytea       NOT NULL CHECK (octet_length(hash) = 32)
);

-- Every query is "newest first" with a keyset cursor on seq; one index per filter.
CREATE INDEX audit_events_user_seq    ON audit_events (user_id, seq DESC);
CREATE INDEX audit_events_session_seq ON audit_events (session_id, seq DESC);
CREATE INDEX audit_events_kind_seq    ON audit_events (kind, seq DESC);
CREATE INDEX audit_events_at          ON audit_events (at DESC, seq DESC);

-- Signed heads of the chain, written now and then.
CREATE TABLE audit_checkpoints (
    seq         bigint      PRIMARY KEY,
    head_hash   bytea       NOT NULL CHECK (octet_length(head_hash) = 32),
    signature   bytea       NOT NULL,
    kid         text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Defence in depth: nobody, not even the owner, changes or removes a record.
-- (A superuser can still switch triggers off; that is what the chain is for.)
CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- One round trip per batch: the writer computes the chain from the head it
-- expects; under the chain lock (pg_advisory_xact_lock, key 'audit_lg'),
-- this inserts the batch only when that head is still the head and no id of
-- the batch is stored yet. Otherwise it inserts nothing and returns the
-- actual head and the stored ids, and the writer recomputes and retries.
-- Each statement of this (volatile) function takes a fresh snapshot, so the
-- head read after the lock sees every append committed before it.
CREATE FUNCTION audit_append(
    expected_head bytea,
    ids uuid[], ats timestamptz[], kinds text[], session_ids text[], user_ids text[], actors text[],
    ips text[], user_agents text[], reasons text[], detailss jsonb[], prev_hashes bytea[], hashes bytea[]
) RETURNS TABLE (appended bigint, head bytea, duplicates uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    current_head bytea;
    stored uuid[];
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7022629598040910951);
    SELECT e.hash INTO current_head FROM audit_events e ORDER BY e.seq DESC LIMIT 1;
    stored := ARRAY(SELECT e.id FROM audit_events e WHERE e.id = ANY(ids));
    IF current_head IS DISTINCT FROM expected_head OR cardinality(stored) > 0 THEN
        RETURN QUERY SELECT 0::bigint, current_head, stored;
        RETURN;
    END IF;
    INSERT INTO audit_events
        (id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details, prev_hash, hash)
    SELECT t.id, t.at, t.kind, t.session_id, t.user_id, t.actor, t.ip, t.user_agent, t.reason, t.details,
           t.prev_hash, t.hash
    FROM unnest(ids, ats, kinds, session_ids, user_ids, actors, ips, user_agents, reasons, detailss,
                prev_hashes, hashes)
         WITH ORDINALITY AS t(id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details,
                              prev_hash, hash, ord)
    ORDER BY t.ord;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN QUERY SELECT n, hashes[cardinality(hashes)], stored;
END;
$$;

-- The service's role: it may add and read records, nothing else. Roles are
-- cluster-wide, so another database may have created it already (perhaps
-- at this very moment).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'session_service') THEN
        CREATE ROLE session_service NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END;
$$;

REVOKE ALL ON audit_events, audit_checkpoints FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_append FROM PUBLIC;
REVOKE ALL ON audit_events, audit_checkpoints FROM session_service;
GRANT USAGE ON SCHEMA public TO session_service;
GRANT SELECT, INSERT ON audit_events, audit_checkpoints TO session_service;
GRANT USAGE ON SEQUENCE audit_events_seq_seq TO session_service;
GRANT EXECUTE ON FUNCTION audit_append TO session_service;
