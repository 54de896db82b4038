-- ES256 low-S cut-over: keys created from now on sign only low-S signatures, and tokenmint
-- refuses a high-S signature under them. Keys created before keep accepting both forms, so no
-- live token breaks during the upgrade. 0/1, as `enabled`.
ALTER TABLE signing_keys ADD COLUMN low_s_only SMALLINT NOT NULL DEFAULT 0 CHECK (low_s_only IN (0, 1));
