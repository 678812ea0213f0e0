-- Console sessions (headwater.console.sessions), the cluster's: a session made by signing in
-- on one gateway works on every gateway (no sticky sessions), and signing out ends it on
-- all of them at once. The session id is kept only as its SHA-256: reading this table does
-- not let anyone sign in. admin_mark: for a session signed in with the admin token, a digest
-- of that token's, so a session outlives neither a restart with a new admin token nor a
-- gateway that has another one.
CREATE TABLE console_sessions(id_hash text PRIMARY KEY, csrf text NOT NULL,
    token_name text NOT NULL, role text NOT NULL, source text, created_ms bigint NOT NULL,
    last_seen_ms bigint NOT NULL, admin_mark text);
CREATE INDEX console_sessions_last_seen ON console_sessions(last_seen_ms);
