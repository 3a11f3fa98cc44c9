-- Issue 13: no reusable secret in Kafka or the database.
-- sign_key: the token's command-signing key K_sign = HMAC-SHA256(token,
-- "taskbus/command-signing/v1"), sealed with AES-256-GCM under a key derived
-- from the region's internal key (security.key_file): nonce || ciphertext ||
-- tag, 60 bytes. NULL for tokens created before this migration, which then
-- work on REST only. The token itself is still never stored.
-- expires_at: after it the token authenticates nowhere (NULL: never expires).
ALTER TABLE api_tokens
    ADD COLUMN sign_key   bytea CHECK (sign_key IS NULL OR octet_length(sign_key) = 60),
    ADD COLUMN expires_at timestamptz;
