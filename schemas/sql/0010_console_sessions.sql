-- taskbus schema, version 10: the web console's sign-in sessions
-- (docs/console.md, docs/architecture.md "Console sessions").
--
-- POST /v1/session exchanges an API token for a session: a random id sent
-- to the browser in an HttpOnly cookie, stored here only as its SHA-256,
-- so a database dump reveals no usable cookie. A session is bound to the
-- token it was opened with: every request re-checks that token exactly as
-- bearer authentication does (revoked, expired, its user disabled), and
-- deleting the token deletes its sessions. Every api process of a region
-- reads the same rows, so a session opened on one is valid on all and a
-- sign-out on one ends it on all. Owner: the api role (store/sessions.h).

CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY,                -- SHA-256 of the cookie's session id
    token_id    text NOT NULL REFERENCES api_tokens(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_token ON console_sessions(token_id);
CREATE INDEX console_sessions_expires ON console_sessions(expires_at);
