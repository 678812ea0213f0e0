-- Warehouse sync history and requests (headwater.warehouses.state), the cluster's: the worker
-- node whose turn it is (an advisory lock per warehouse) writes a sync's rows; every node's
-- status, API, console, trace and diagnose read them; any node adds requests, and whichever
-- worker syncs next takes them. Same columns as the SQLite file's tables, "warehouse_" first.
CREATE TABLE warehouse_syncs(id bigserial PRIMARY KEY, warehouse text NOT NULL,
    started_ms bigint NOT NULL, finished_ms bigint, status text NOT NULL,
    after_offset bigint NOT NULL, last_offset bigint NOT NULL, events bigint NOT NULL,
    rows text NOT NULL, discards bigint NOT NULL, error text, error_kind text,
    node text);
CREATE INDEX warehouse_syncs_by_warehouse ON warehouse_syncs(warehouse, id);
CREATE TABLE warehouse_positions(warehouse text PRIMARY KEY, position bigint NOT NULL,
    updated_ms bigint NOT NULL);
CREATE TABLE warehouse_totals(warehouse text NOT NULL, table_name text NOT NULL,
    rows bigint NOT NULL, PRIMARY KEY (warehouse, table_name));
CREATE TABLE warehouse_discarded(seq bigserial PRIMARY KEY, warehouse text NOT NULL,
    row_id text NOT NULL, sync_id bigint NOT NULL, table_name text NOT NULL,
    column_name text NOT NULL, reason text NOT NULL);
CREATE INDEX warehouse_discarded_by_row ON warehouse_discarded(warehouse, row_id);
CREATE TABLE warehouse_requests(id bigserial PRIMARY KEY, warehouse text NOT NULL,
    kind text NOT NULL, since_ms bigint, requested_ms bigint NOT NULL, taken_ms bigint);
