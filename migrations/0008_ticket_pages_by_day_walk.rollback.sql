-- Back to GET /tickets planning every day of a wide window on each call.
DROP FUNCTION myticket_tickets_page_by_product(text, text, text[], timestamptz, timestamptz, timestamptz, uuid, integer, integer);
DROP FUNCTION myticket_tickets_page_by_order_ref(text, text[], timestamptz, timestamptz, timestamptz, uuid, integer, integer);
DROP FUNCTION myticket_tickets_page(text[], timestamptz, timestamptz, timestamptz, uuid, integer, integer);
DROP FUNCTION myticket_walk_step(timestamptz, timestamptz, timestamptz, integer);
