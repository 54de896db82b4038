-- PostgreSQL dialect of migrations/sqlite/0002_revocation.sql: the same tables, columns and
-- constraints (INTEGER → BIGINT).

-- Audiences whose tokens a client with the `introspect` permission may introspect.
ALTER TABLE clients ADD COLUMN introspect_audiences TEXT NOT NULL DEFAULT '[]';
-- The sequence of the change that last disabled the client (NULL: never, or configured so).
ALTER TABLE clients ADD COLUMN disabled_sequence BIGINT;

-- The change log: every revocation and client change, numbered in commit order, kept until
-- keep_until so a watcher can resume from its cursor. There is no serial default: writers
-- assign `sequence` from log_meta 'high_water' under a transaction-scoped advisory lock
-- (see src/store/postgres.rs), so commit order is sequence order across replicas.
CREATE TABLE changes (
    sequence              BIGINT PRIMARY KEY NOT NULL,
    kind                  TEXT NOT NULL CHECK (kind IN ('token_revoked', 'client_cutoff', 'client_disabled', 'client_enabled', 'key_revoked')),
    token_id              TEXT,
    client_id             TEXT,
    key_id                TEXT,
    revoked_by            TEXT,
    expires_at            BIGINT,
    issued_at_or_before   BIGINT,
    committed_at          BIGINT NOT NULL,
    keep_until            BIGINT NOT NULL
);
CREATE INDEX changes_keep_until ON changes (keep_until);

-- Revoked tokens in force, until their token could no longer be valid.
CREATE TABLE revoked_tokens (
    token_id     TEXT PRIMARY KEY NOT NULL,
    expires_at   BIGINT NOT NULL,
    client_id    TEXT,
    revoked_by   TEXT NOT NULL,
    sequence     BIGINT NOT NULL,
    revoked_at   BIGINT NOT NULL,
    keep_until   BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_keep_until ON revoked_tokens (keep_until);

-- Client cut-offs in force.
CREATE TABLE client_cutoffs (
    client_id            TEXT PRIMARY KEY NOT NULL,
    issued_at_or_before  BIGINT NOT NULL,
    sequence             BIGINT NOT NULL,
    keep_until           BIGINT NOT NULL
);

-- Small counters of the log: `purged_through`, the highest sequence removed, and (here only:
-- SQLite keeps it in sqlite_sequence) `high_water`, the highest sequence ever assigned.
CREATE TABLE log_meta (
    name   TEXT PRIMARY KEY NOT NULL,
    value  BIGINT NOT NULL
);
