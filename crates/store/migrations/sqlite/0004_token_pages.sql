-- Watch snapshots read revoked tokens in pages by the sequence of their change.
CREATE INDEX revoked_tokens_sequence ON revoked_tokens (sequence);
