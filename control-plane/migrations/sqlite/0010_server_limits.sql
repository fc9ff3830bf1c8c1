-- Schema version 10: a server's own timeouts and cap on calls in flight, as the JSON
-- of `ServerLimits` (connect_timeout_ms, first_byte_timeout_ms, call_timeout_ms,
-- max_in_flight, max_queued); NULL: every default.
ALTER TABLE servers ADD COLUMN limits TEXT;
