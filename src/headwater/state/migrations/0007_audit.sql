-- The audit trail (headwater.state.audit), the cluster's: every node and the CLI append, the
-- console and API of any node read. Rows are never updated or deleted; id only grows.
CREATE TABLE audit_entries(id bigserial PRIMARY KEY, at_ms bigint NOT NULL,
    actor text NOT NULL, action text NOT NULL, resource text NOT NULL, origin text NOT NULL,
    diff text NOT NULL);
CREATE INDEX audit_entries_resource ON audit_entries(resource, id);
CREATE INDEX audit_entries_time ON audit_entries(at_ms);
-- The workspace the cluster last loaded (masked), which the next load is compared with
-- (headwater.state.workspace_history): one row.
CREATE TABLE workspace_snapshot(id integer PRIMARY KEY CHECK (id = 1), doc text NOT NULL);
