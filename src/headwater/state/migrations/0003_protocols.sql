-- The protocols store (headwater.processor.protocols_store): events tracking plans blocked
-- (kept 30 days for trace and re-send), violation counts per minute, and samples.
CREATE TABLE blocked(id bigserial PRIMARY KEY, source text NOT NULL, plan text NOT NULL,
    message_id text NOT NULL, received_ms bigint NOT NULL, reason text NOT NULL,
    violations bytea NOT NULL, payload bytea NOT NULL);
CREATE INDEX blocked_time ON blocked(source, received_ms, id);
CREATE INDEX blocked_message ON blocked(message_id);
CREATE INDEX blocked_age ON blocked(received_ms);
CREATE TABLE violation_counts(minute bigint NOT NULL, source text NOT NULL,
    plan text NOT NULL, event text NOT NULL, event_type text NOT NULL,
    violation_type text NOT NULL, field text NOT NULL, count bigint NOT NULL,
    PRIMARY KEY(source, minute, plan, event, event_type, violation_type, field));
CREATE INDEX counts_age ON violation_counts(minute);
CREATE TABLE violation_samples(id bigserial PRIMARY KEY, source text NOT NULL,
    plan text NOT NULL, event text NOT NULL, event_type text NOT NULL,
    violation_type text NOT NULL, field text NOT NULL, expected text NOT NULL,
    got text NOT NULL, description text NOT NULL, message_id text NOT NULL,
    at_ms bigint NOT NULL);
CREATE INDEX samples_key ON violation_samples(source, plan, event, violation_type, field, id);
CREATE INDEX samples_age ON violation_samples(at_ms);
