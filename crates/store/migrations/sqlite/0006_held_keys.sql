-- Keys whose private half is held outside the store (an HSM, a KMS): the store keeps their
-- public half, which custody holds them (`held_by`) and how it names them (`held_ref`). A key
-- is either sealed here (kek_id, nonce, ciphertext) or held elsewhere, never both. SQLite
-- cannot drop NOT NULL or add a table CHECK, so the table is rebuilt with its rows copied.
CREATE TABLE signing_keys_rebuilt (
    kid           TEXT PRIMARY KEY NOT NULL,
    algorithm     TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA')),
    state         TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired', 'revoked')),
    public_x      BLOB NOT NULL,
    public_y      BLOB,
    kek_id        TEXT,
    nonce         BLOB,
    ciphertext    BLOB,
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    retired_at    INTEGER,
    revoked_at    INTEGER,
    low_s_only    INTEGER NOT NULL DEFAULT 0 CHECK (low_s_only IN (0, 1)),
    held_by       TEXT,
    held_ref      TEXT,
    CHECK (
        (kek_id IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL
            AND held_by IS NULL AND held_ref IS NULL)
        OR (kek_id IS NULL AND nonce IS NULL AND ciphertext IS NULL
            AND held_by IS NOT NULL AND held_ref IS NOT NULL)
    )
);
INSERT INTO signing_keys_rebuilt (kid, algorithm, state, public_x, public_y, kek_id, nonce,
    ciphertext, created_at, activated_at, retired_at, revoked_at, low_s_only)
SELECT kid, algorithm, state, public_x, public_y, kek_id, nonce,
    ciphertext, created_at, activated_at, retired_at, revoked_at, low_s_only
FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_rebuilt RENAME TO signing_keys;
-- Exactly one current key.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
