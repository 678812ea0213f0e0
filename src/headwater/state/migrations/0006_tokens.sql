-- Scoped API tokens (headwater.state.tokens), shared by every node: a name, a role, the one
-- source of a source_admin, the SHA-256 of the token. A revoked token keeps its row (names
-- are never reused, so the audit trail's "token ci-deploy" means one token).
CREATE TABLE tokens(name text PRIMARY KEY, role text NOT NULL, source text,
    digest text NOT NULL UNIQUE, created_ms bigint NOT NULL, created_by text NOT NULL,
    revoked_ms bigint);
