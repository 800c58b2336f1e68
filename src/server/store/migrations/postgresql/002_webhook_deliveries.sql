-- veil schema v2 (PostgreSQL 15): the Svix deliveries already applied, so that a replayed or
-- re-sent delivery changes nothing. One row per svix-id, written in the transaction of
-- the event's effects (a delivery that failed leaves no row, and its retry is processed);
-- rows older than CLERK_WEBHOOK_DEDUP_SECONDS are pruned. Several veilds may share the
-- database: a second claim of the same id waits for the first transaction to end.

CREATE TABLE webhook_deliveries (
    id           TEXT NOT NULL PRIMARY KEY, -- the svix-id header
    processed_at TEXT NOT NULL
);
CREATE INDEX ix_webhook_deliveries_processed_at ON webhook_deliveries (processed_at);
