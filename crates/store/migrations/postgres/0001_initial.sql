-- PostgreSQL dialect of migrations/sqlite/0001_initial.sql: the same tables, columns and
-- constraints (INTEGER → BIGINT, BLOB → BYTEA; `enabled` stays an integer 0/1).

-- Signing keys: public half in clear, private half sealed under a KEK (AES-256-GCM).
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    algorithm     TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA')),
    state         TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired', 'revoked')),
    public_x      BYTEA NOT NULL,
    public_y      BYTEA,
    kek_id        TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retired_at    BIGINT,
    revoked_at    BIGINT
);
-- Exactly one current key.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';

-- Sealed secrets other than signing keys (the client-secret pepper).
CREATE TABLE sealed_secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    kek_id      TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL
);

-- Registered clients.
CREATE TABLE clients (
    id                  TEXT PRIMARY KEY NOT NULL,
    matcher_kind        TEXT NOT NULL CHECK (matcher_kind IN ('san_uri', 'san_dns', 'subject_dn')),
    matcher_value       TEXT NOT NULL,
    scopes              TEXT NOT NULL,  -- JSON array of strings
    default_scopes      TEXT NOT NULL,
    audiences           TEXT NOT NULL,
    default_audiences   TEXT NOT NULL,
    permissions         TEXT NOT NULL,
    default_lifetime_s  BIGINT NOT NULL CHECK (default_lifetime_s > 0),
    max_lifetime_s      BIGINT NOT NULL CHECK (max_lifetime_s >= default_lifetime_s),
    enabled             SMALLINT NOT NULL CHECK (enabled IN (0, 1)),
    secret_hash         BYTEA,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (matcher_kind, matcher_value)
);
