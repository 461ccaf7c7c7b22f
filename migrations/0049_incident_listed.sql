-- Whether an incident is listed as an intrusion (GET /api/v1/incidents), stored so a page reads
-- it through an index instead of summing every incident's alerts (issue 16). The rule: at least
-- two distinct policies of activity, or one alert of activity at high or critical. Posture
-- (`posture:…`, and Security Hub control findings: `aws-securityhub:…` with a compliance
-- status) never counts. Kept by triggers on `alerts`, whoever writes them (a merge clears the
-- absorbed incident's first: src/alerts/incidents.rs).
ALTER TABLE incidents ADD COLUMN listed boolean NOT NULL DEFAULT false;

CREATE FUNCTION skywarden_alert_is_posture(policy_id text, details jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT policy_id LIKE 'posture:%'
        OR (policy_id LIKE 'aws-securityhub:%' AND details ->> 'compliance_status' IS NOT NULL)
$$;

-- What a change of one alert did to its incident: a gain (an alert of activity joined, or one
-- rose in severity or became activity) can only list it, a loss (one left, was deleted or
-- became posture) only unlist it, so either stops at the stored flag when that already says so;
-- otherwise (or with `gained` null: a severity that fell, a policy that changed) the rule is
-- read again. The row is locked first and the rule read after, in a statement of its own: a
-- concurrent writer of the same incident's alerts has then committed, and its alerts count.
CREATE FUNCTION skywarden_incident_refresh_listed(incident text, gained boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    was boolean;
BEGIN
    SELECT i.listed INTO was FROM incidents i WHERE i.incident_id = incident FOR NO KEY UPDATE;
    IF NOT FOUND OR was = gained THEN
        RETURN;
    END IF;
    -- The rule (here, not in a function of its own: PL/pgSQL keeps this plan for the session).
    UPDATE incidents i SET listed = NOT was
    WHERE i.incident_id = incident
      AND (SELECT coalesce(count(DISTINCT a.policy_id) > 1 OR max(a.severity) >= 'high', false)
           FROM alerts a
           WHERE a.incident_id = incident AND NOT skywarden_alert_is_posture(a.policy_id, a.details)) <> was;
END;
$$;

-- Per alert written: row triggers, filtered by their WHEN, so the writes that change nothing
-- the rule reads (status, evidence counts, titles, unlinked alerts) cost nothing.
CREATE FUNCTION skywarden_alert_refresh_listed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_counts boolean := TG_OP <> 'INSERT' AND OLD.incident_id IS NOT NULL
                          AND NOT skywarden_alert_is_posture(OLD.policy_id, OLD.details);
    new_counts boolean := TG_OP <> 'DELETE' AND NEW.incident_id IS NOT NULL
                          AND NOT skywarden_alert_is_posture(NEW.policy_id, NEW.details);
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.incident_id IS NOT DISTINCT FROM NEW.incident_id THEN
        IF old_counts AND new_counts THEN
            PERFORM skywarden_incident_refresh_listed(NEW.incident_id,
                CASE WHEN OLD.policy_id = NEW.policy_id AND NEW.severity >= OLD.severity THEN true END);
        ELSIF old_counts OR new_counts THEN
            PERFORM skywarden_incident_refresh_listed(NEW.incident_id, new_counts);
        END IF;
        RETURN NULL;
    END IF;
    IF old_counts THEN
        PERFORM skywarden_incident_refresh_listed(OLD.incident_id, false);
    END IF;
    IF new_counts THEN
        PERFORM skywarden_incident_refresh_listed(NEW.incident_id, true);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER alerts_listed_insert AFTER INSERT ON alerts
    FOR EACH ROW WHEN (NEW.incident_id IS NOT NULL) EXECUTE FUNCTION skywarden_alert_refresh_listed();
CREATE TRIGGER alerts_listed_update AFTER UPDATE OF incident_id, severity, policy_id, details ON alerts
    FOR EACH ROW WHEN (OLD.incident_id IS DISTINCT FROM NEW.incident_id
                       OR ((OLD.incident_id IS NOT NULL)
                           AND (OLD.severity <> NEW.severity OR OLD.policy_id <> NEW.policy_id
                                OR skywarden_alert_is_posture(OLD.policy_id, OLD.details)
                                   <> skywarden_alert_is_posture(NEW.policy_id, NEW.details))))
    EXECUTE FUNCTION skywarden_alert_refresh_listed();
CREATE TRIGGER alerts_listed_delete AFTER DELETE ON alerts
    FOR EACH ROW WHEN (OLD.incident_id IS NOT NULL) EXECUTE FUNCTION skywarden_alert_refresh_listed();

-- The backfill: the same rule, in one statement.
UPDATE incidents i SET listed = true
FROM (SELECT a.incident_id FROM alerts a
      WHERE a.incident_id IS NOT NULL AND NOT skywarden_alert_is_posture(a.policy_id, a.details)
      GROUP BY a.incident_id
      HAVING count(DISTINCT a.policy_id) > 1 OR max(a.severity) >= 'high') q
WHERE i.incident_id = q.incident_id;

-- The pages: newest first, all listed incidents, and the open ones (`open_only`).
CREATE INDEX incidents_listed_idx ON incidents (first_seen DESC, incident_id DESC)
    WHERE listed AND merged_into IS NULL;
CREATE INDEX incidents_listed_open_idx ON incidents (first_seen DESC, incident_id DESC)
    WHERE listed AND merged_into IS NULL AND status IN ('open', 'investigating', 'contained');
