-- Shared work across nodes (headwater.state.leases): who delivers to each destination now,
-- and the nodes' heartbeats. Times are PostgreSQL's clock.
CREATE TABLE leases(name text PRIMARY KEY, owner text NOT NULL,
    expires_at timestamptz NOT NULL, taken_at timestamptz NOT NULL);
CREATE TABLE nodes(node text PRIMARY KEY, role text NOT NULL, host text NOT NULL,
    pid integer NOT NULL, started_ms bigint NOT NULL, heartbeat_at timestamptz NOT NULL);
