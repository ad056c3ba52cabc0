-- Back to claims bounded by body bytes alone, without the journal of claims: deaths
-- counted so far are forgotten (their tickets stay pending, as they were).
DROP TABLE worker_claims;
ALTER TABLE pending_tickets DROP COLUMN body_lines;
DROP FUNCTION myticket_body_lines(bytea);
