-- At most one next key per algorithm: two replicas that both create a lane's next key (a
-- newly added algorithm), or revoke the same next key at once, conflict instead of leaving
-- the lane with two.
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (algorithm) WHERE state = 'next';
