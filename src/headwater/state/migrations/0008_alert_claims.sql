-- Alerts sent once for the cluster (headwater.status.claims): every gateway watches and
-- decides its alerts; the first to claim a component's opened / renotify / resolved alert
-- sends it, the others' same alert within the claim window is not sent again.
CREATE TABLE alert_claims(component text NOT NULL, kind text NOT NULL, at_ms bigint NOT NULL,
    node text NOT NULL, PRIMARY KEY (component, kind));
