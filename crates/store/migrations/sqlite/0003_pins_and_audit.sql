-- Self-signed clients (`self_signed_tls_client_auth`): a fourth matcher kind, and each pinned
-- thumbprint unique across clients. SQLite cannot alter a CHECK constraint, so the clients
-- table is rebuilt with the same columns, in the same order, and its rows copied.
CREATE TABLE clients_rebuilt (
    id                    TEXT PRIMARY KEY NOT NULL,
    matcher_kind          TEXT NOT NULL CHECK (matcher_kind IN ('san_uri', 'san_dns', 'subject_dn', 'self_signed')),
    matcher_value         TEXT NOT NULL,
    scopes                TEXT NOT NULL,  -- JSON array of strings
    default_scopes        TEXT NOT NULL,
    audiences             TEXT NOT NULL,
    default_audiences     TEXT NOT NULL,
    permissions           TEXT NOT NULL,
    default_lifetime_s    INTEGER NOT NULL CHECK (default_lifetime_s > 0),
    max_lifetime_s        INTEGER NOT NULL CHECK (max_lifetime_s >= default_lifetime_s),
    enabled               INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    secret_hash           BLOB,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    introspect_audiences  TEXT NOT NULL DEFAULT '[]',
    disabled_sequence     INTEGER,
    UNIQUE (matcher_kind, matcher_value)
);
INSERT INTO clients_rebuilt (id, matcher_kind, matcher_value, scopes, default_scopes, audiences,
    default_audiences, permissions, default_lifetime_s, max_lifetime_s, enabled, secret_hash,
    created_at, updated_at, introspect_audiences, disabled_sequence)
SELECT id, matcher_kind, matcher_value, scopes, default_scopes, audiences,
    default_audiences, permissions, default_lifetime_s, max_lifetime_s, enabled, secret_hash,
    created_at, updated_at, introspect_audiences, disabled_sequence
FROM clients;
DROP TABLE clients;
ALTER TABLE clients_rebuilt RENAME TO clients;

-- One row per pinned thumbprint (base64url SHA-256 of the whole certificate): the primary
-- key refuses a thumbprint pinned by two clients. Written with the client, in one transaction.
CREATE TABLE client_pins (
    thumbprint  TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL
);
CREATE INDEX client_pins_client ON client_pins (client_id);

-- The audit trail (SPEC §8): revocations, key rotations and admin changes, each written in the
-- transaction of the change it records. Never a token or a secret.
CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,   -- unix seconds
    actor   TEXT NOT NULL,      -- the client id that asked, or "tokenmint" for scheduled work
    action  TEXT NOT NULL,      -- e.g. "client.registered", "token.revoked", "key.rotated"
    target  TEXT NOT NULL,      -- what it acted on: a client id, key id or token id
    detail  TEXT NOT NULL       -- JSON object of strings
);
CREATE INDEX audit_events_at ON audit_events (at);
