-- Audiences whose tokens a client with the `introspect` permission may introspect.
ALTER TABLE clients ADD COLUMN introspect_audiences TEXT NOT NULL DEFAULT '[]';
-- The sequence of the change that last disabled the client (NULL: never, or configured so).
ALTER TABLE clients ADD COLUMN disabled_sequence INTEGER;

-- The change log: every revocation and client change, numbered in commit order (one writer,
-- AUTOINCREMENT), kept until keep_until so a watcher can resume from its cursor.
CREATE TABLE changes (
    sequence              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                  TEXT NOT NULL CHECK (kind IN ('token_revoked', 'client_cutoff', 'client_disabled', 'client_enabled', 'key_revoked')),
    token_id              TEXT,
    client_id             TEXT,
    key_id                TEXT,
    revoked_by            TEXT,
    expires_at            INTEGER,
    issued_at_or_before   INTEGER,
    committed_at          INTEGER NOT NULL,
    keep_until            INTEGER NOT NULL
);
CREATE INDEX changes_keep_until ON changes (keep_until);

-- Revoked tokens in force, until their token could no longer be valid.
CREATE TABLE revoked_tokens (
    token_id     TEXT PRIMARY KEY NOT NULL,
    expires_at   INTEGER NOT NULL,
    client_id    TEXT,
    revoked_by   TEXT NOT NULL,
    sequence     INTEGER NOT NULL,
    revoked_at   INTEGER NOT NULL,
    keep_until   INTEGER NOT NULL
);
CREATE INDEX revoked_tokens_keep_until ON revoked_tokens (keep_until);

-- Client cut-offs in force.
CREATE TABLE client_cutoffs (
    client_id            TEXT PRIMARY KEY NOT NULL,
    issued_at_or_before  INTEGER NOT NULL,
    sequence             INTEGER NOT NULL,
    keep_until           INTEGER NOT NULL
);

-- Small counters of the log: `purged_through`, the highest sequence removed.
CREATE TABLE log_meta (
    name   TEXT PRIMARY KEY NOT NULL,
    value  INTEGER NOT NULL
);
