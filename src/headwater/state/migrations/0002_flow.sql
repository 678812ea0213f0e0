-- The ingest flow counts (headwater.observe.flow): per minute, source and step, added to by
-- every gateway; and what the processor decided about stored events, for their traces.
CREATE TABLE flow(minute bigint NOT NULL, source text NOT NULL, step text NOT NULL,
    count bigint NOT NULL, PRIMARY KEY(minute, source, step));
CREATE TABLE decisions(message_id text PRIMARY KEY, source text NOT NULL,
    at_ms bigint NOT NULL, decisions bytea NOT NULL);
CREATE INDEX decisions_time ON decisions(at_ms);
