-- The newest customer{} embedded in a subscription, entitlement or usage event (§7.4), with
-- that event's time. A placeholder shows it; and when a customer.deleted arrives after newer
-- state about the customer, the customer lives on as that newer state's placeholder, built
-- from this copy, exactly as if the events had arrived in order (§7.6). A tombstone keeps
-- none of it.
ALTER TABLE customers ADD COLUMN embedded jsonb;
ALTER TABLE customers ADD COLUMN embedded_at timestamptz;

-- A placeholder written before this migration was made from an embedded copy: record it (its
-- time is unknown, so any timed copy replaces it).
UPDATE customers
   SET embedded = jsonb_build_object('name', name, 'email', email, 'billingId', billing_id)
 WHERE raw IS NULL AND NOT is_deleted;
