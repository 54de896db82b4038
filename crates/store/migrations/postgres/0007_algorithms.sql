-- Algorithm agility: RS256, PS256, ML-DSA-44 and ML-DSA-65 join ES256 and EdDSA, and several
-- algorithms sign at once, each with its own current key: at most one current key per
-- algorithm. RSA keys keep n in public_x and e in public_y; ML-DSA keys their encoded public key
-- in public_x (their sealed private half is the 32-byte seed).
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_algorithm_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_algorithm_check
    CHECK (algorithm IN ('ES256', 'EdDSA', 'RS256', 'PS256', 'ML-DSA-44', 'ML-DSA-65'));
DROP INDEX signing_keys_one_current;
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (algorithm) WHERE state = 'current';
