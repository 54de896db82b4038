-- Signing keys: public half in clear, private half sealed under a KEK (AES-256-GCM).
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    algorithm     TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA')),
    state         TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired', 'revoked')),
    public_x      BLOB NOT NULL,
    public_y      BLOB,
    kek_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    retired_at    INTEGER,
    revoked_at    INTEGER
);
-- Exactly one current key.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';

-- Sealed secrets other than signing keys (the client-secret pepper).
CREATE TABLE sealed_secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    kek_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL
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
    default_lifetime_s  INTEGER NOT NULL CHECK (default_lifetime_s > 0),
    max_lifetime_s      INTEGER NOT NULL CHECK (max_lifetime_s >= default_lifetime_s),
    enabled             INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    secret_hash         BLOB,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (matcher_kind, matcher_value)
);
