-- What each destination's worker shows (counters, positions, breaker: the control channel's
-- snapshot), written by the node that delivers it at each lease round, so that a gateway
-- node with no delivery of its own shows the whole cluster's delivery (headwater.state.leases).
CREATE TABLE worker_snapshots(name text PRIMARY KEY, node text NOT NULL, doc text NOT NULL,
    updated_at timestamptz NOT NULL);
