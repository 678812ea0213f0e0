-- The status page's state (headwater.status.store), the cluster's: one gateway at a time
-- (a session advisory lock) applies each check — its own component states merged with the
-- other gateways' fresh observations — to the components, incidents and uptime; every
-- gateway reads them; maintenance windows declared on any node or by the CLI apply to all.
-- Same columns as the SQLite file's tables, "status_" first.
CREATE TABLE status_components(id text PRIMARY KEY, name text NOT NULL, status text NOT NULL,
    reason text NOT NULL, created_ms bigint NOT NULL, updated_ms bigint NOT NULL);
CREATE TABLE status_incidents(id bigserial PRIMARY KEY, component text NOT NULL,
    name text NOT NULL, status text NOT NULL, impact text NOT NULL, created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL, resolved_ms bigint);
CREATE INDEX status_incidents_open ON status_incidents(component, resolved_ms);
CREATE TABLE status_incident_updates(id bigserial PRIMARY KEY, incident bigint NOT NULL,
    status text NOT NULL, body text NOT NULL, created_ms bigint NOT NULL,
    old_status text NOT NULL, new_status text NOT NULL);
CREATE INDEX status_incident_updates_incident ON status_incident_updates(incident);
CREATE TABLE status_maintenances(id bigserial PRIMARY KEY, name text NOT NULL,
    components text NOT NULL, starts_ms bigint NOT NULL, ends_ms bigint NOT NULL,
    created_ms bigint NOT NULL, body text NOT NULL);
CREATE TABLE status_uptime(component text NOT NULL, day bigint NOT NULL, status text NOT NULL,
    seconds double precision NOT NULL, PRIMARY KEY (component, day, status));
-- Each gateway's latest component states (before maintenance windows), which the writer
-- merges: the worst fresh one wins.
CREATE TABLE status_observations(node text NOT NULL, component text NOT NULL,
    name text NOT NULL, description text NOT NULL, grp text, status text NOT NULL,
    reason text NOT NULL, at_ms bigint NOT NULL, PRIMARY KEY (node, component));
