-- Keyset pages of the API's longest lists read these orders: an index each, so a page is a
-- short index scan, not a sort of the whole table.
CREATE INDEX alerts_page_idx ON alerts (first_seen DESC, alert_id DESC);
CREATE INDEX posture_findings_page_idx ON posture_findings (severity DESC, check_id, resource_id, id);
