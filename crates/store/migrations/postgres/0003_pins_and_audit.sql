-- PostgreSQL dialect of migrations/sqlite/0003_pins_and_audit.sql: the same tables, columns
-- and constraints (INTEGER → BIGINT). Here the CHECK constraint can be replaced in place.
ALTER TABLE clients DROP CONSTRAINT clients_matcher_kind_check;
ALTER TABLE clients ADD CONSTRAINT clients_matcher_kind_check
    CHECK (matcher_kind IN ('san_uri', 'san_dns', 'subject_dn', 'self_signed'));

-- One row per pinned thumbprint: the primary key refuses a thumbprint pinned by two clients.
CREATE TABLE client_pins (
    thumbprint  TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL
);
CREATE INDEX client_pins_client ON client_pins (client_id);

-- The audit trail, each event written in the transaction of the change it records.
CREATE TABLE audit_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
