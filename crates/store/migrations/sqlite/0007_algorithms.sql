-- Algorithm agility: RS256, PS256, ML-DSA-44 and ML-DSA-65 join ES256 and EdDSA, and several
-- algorithms sign at once, each with its own current key: at most one current key per
-- algorithm. RSA keys keep n in public_x and e in public_y; ML-DSA keys their encoded public key
-- in public_x (their sealed private half is the 32-byte seed). SQLite cannot alter a CHECK, so
-- the table is rebuilt with its rows copied.
CREATE TABLE signing_keys_rebuilt (
    kid           TEXT PRIMARY KEY NOT NULL,
    algorithm     TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA', 'RS256', 'PS256', 'ML-DSA-44', 'ML-DSA-65')),
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
    ciphertext, created_at, activated_at, retired_at, revoked_at, low_s_only, held_by, held_ref)
SELECT kid, algorithm, state, public_x, public_y, kek_id, nonce,
    ciphertext, created_at, activated_at, retired_at, revoked_at, low_s_only, held_by, held_ref
FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_rebuilt RENAME TO signing_keys;
-- At most one current key per algorithm.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (algorithm) WHERE state = 'current';
