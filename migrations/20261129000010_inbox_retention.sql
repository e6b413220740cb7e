-- INBOX_RETENTION: claims older than the retention are found, and deleted, by their age.
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);
