ALTER TABLE processed_bodies
    ADD CONSTRAINT processed_bodies_ticket_id_fkey
    FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE;
ALTER TABLE ticket_lines
    ADD CONSTRAINT ticket_lines_ticket_id_fkey
    FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE;
