-- An imported GuardDuty or Security Hub finding is one alert, found by its dedup key (the
-- finding id and creation time) whatever policy it names now: Security Hub can rename a
-- finding's control or generator (src/pollers/findings.rs, keep_alert_identity).
CREATE INDEX alerts_account_dedup_idx ON alerts (account_id, dedup_key);
