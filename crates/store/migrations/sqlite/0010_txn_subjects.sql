-- Whether a client may name a transaction token's subject itself (a self-signed JWT or an
-- unsigned JSON object): an edge gateway's registration, never a default.
ALTER TABLE clients ADD COLUMN asserts_txn_subjects INTEGER NOT NULL DEFAULT 0
    CHECK (asserts_txn_subjects IN (0, 1));
