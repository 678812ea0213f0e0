-- The delivery store (headwater.delivery.store): where each destination stands, what waits
-- for a retry, the ledger, dead letters and replays. Times are epoch milliseconds; offsets
-- are the log's. The SQLite file has the same tables (its schema is in the module).
CREATE TABLE delivery_meta(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE cursors(destination text PRIMARY KEY, "offset" bigint NOT NULL,
    updated_ms bigint NOT NULL);
CREATE TABLE retries(id bigserial PRIMARY KEY, destination text NOT NULL,
    first_offset bigint NOT NULL, last_offset bigint NOT NULL, count integer NOT NULL,
    events bytea NOT NULL, attempts integer NOT NULL, next_attempt_ms bigint NOT NULL,
    deadline_ms bigint NOT NULL, first_failed_ms bigint NOT NULL, last_status integer,
    last_error text NOT NULL);
CREATE INDEX retries_order ON retries(destination, first_offset);
CREATE TABLE ledger(id bigserial PRIMARY KEY, destination text NOT NULL,
    state text NOT NULL, first_offset bigint NOT NULL, last_offset bigint NOT NULL,
    offsets bytea NOT NULL, count integer NOT NULL, at_ms bigint NOT NULL,
    attempts integer NOT NULL, status integer, reason text, duration_ms double precision,
    latency bytea, exchange bytea);
CREATE INDEX ledger_offsets ON ledger(destination, first_offset);
CREATE INDEX ledger_time ON ledger(at_ms);
CREATE INDEX ledger_window ON ledger(destination, at_ms);
CREATE TABLE deadletter(id bigserial PRIMARY KEY, destination text NOT NULL,
    "offset" bigint NOT NULL, message_id text NOT NULL, received_ms bigint NOT NULL,
    payload bytea NOT NULL, reason text NOT NULL, status integer, attempts integer NOT NULL,
    first_failed_ms bigint, dead_ms bigint NOT NULL, exchange bytea);
CREATE INDEX deadletter_dest ON deadletter(destination, id);
CREATE INDEX deadletter_message ON deadletter(message_id);
CREATE TABLE replays(id bigserial PRIMARY KEY, destination text NOT NULL,
    since_ms bigint NOT NULL, until_ms bigint NOT NULL, end_offset bigint NOT NULL,
    position bigint NOT NULL, state text NOT NULL, created_ms bigint NOT NULL,
    finished_ms bigint, sent bigint NOT NULL DEFAULT 0, filtered bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0);
