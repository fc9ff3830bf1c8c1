-- Routed MCP calls shipped by proxies (schema version 4): one row per tools/call,
-- prompts/get or resources/read. The id is the proxy's idempotency key, so a batch
-- sent twice is stored once. Times: time_ms is the proxy's clock in unix
-- milliseconds, received_at the control plane's in unix seconds. `actor` is
-- resolved once at ingest (the token creator's username, else the token name) so
-- it survives the token's deletion.
-- Like audit_events, kept after the workspace is deleted. BIGINT, not INTEGER,
-- where values pass 2^31 (milliseconds), so the same SQL holds on PostgreSQL.
CREATE TABLE call_events (
    id          TEXT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    workspace   TEXT NOT NULL,
    token_id    TEXT NOT NULL,
    token_name  TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    server      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    latency_us  BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    transport   TEXT NOT NULL,
    proxy_id    TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX call_events_by_workspace ON call_events(workspace, time_ms);
