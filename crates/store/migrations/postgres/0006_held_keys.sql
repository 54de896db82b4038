-- Keys whose private half is held outside the store (an HSM, a KMS): the store keeps their
-- public half, which custody holds them (`held_by`) and how it names them (`held_ref`). A key
-- is either sealed here (kek_id, nonce, ciphertext) or held elsewhere, never both.
ALTER TABLE signing_keys ALTER COLUMN kek_id DROP NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN nonce DROP NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN ciphertext DROP NOT NULL;
ALTER TABLE signing_keys ADD COLUMN held_by TEXT;
ALTER TABLE signing_keys ADD COLUMN held_ref TEXT;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_sealed_or_held CHECK (
    (kek_id IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL
        AND held_by IS NULL AND held_ref IS NULL)
    OR (kek_id IS NULL AND nonce IS NULL AND ciphertext IS NULL
        AND held_by IS NOT NULL AND held_ref IS NOT NULL)
);
