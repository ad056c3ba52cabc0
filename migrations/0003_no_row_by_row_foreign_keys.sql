-- Drops the foreign keys from ticket_lines and processed_bodies to tickets.
-- depends: 0002_processing

-- Each key checked every inserted row with a lookup and a lock on its ticket. Draining
-- 30,000 distinct tickets with `myticket worker`, that cost PostgreSQL about 110 us of
-- CPU per ticket (3.4 lines and one digest each), two fifths of its share of processing.
-- The link still holds by construction: the worker writes a ticket's lines and digest
-- only in the transaction that holds that ticket locked, and the service never deletes
-- a ticket. Whoever purges tickets deletes their ticket_lines and processed_bodies rows
-- in the same transaction.
ALTER TABLE ticket_lines DROP CONSTRAINT ticket_lines_ticket_id_fkey;
ALTER TABLE processed_bodies DROP CONSTRAINT processed_bodies_ticket_id_fkey;
