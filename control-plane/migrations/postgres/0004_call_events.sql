-- Routed MCP calls shipped by proxies (schema version 4): one row per tools/call,
-- prompts/get or resources/read. The id is the proxy's idempotency key, so a batch
-- sent twice is stored once. Times: time_ms is the proxy's clock in unix
-- milliseconds, received_at the control plane's in unix seconds. `actor` is
-- resolved once at ingest (the token creator's username, else the token name) so
-- it survives the token's deletion.
-- Like audit_events, kept after the workspace is deleted.
CREATE TABLE call_events (
    id          TEXT COLLATE "C" PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    workspace   TEXT COLLATE "C" NOT NULL,
    token_id    TEXT COLLATE "C" NOT NULL,
    token_name  TEXT COLLATE "C" NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    action      TEXT COLLATE "C" NOT NULL,
    server      TEXT COLLATE "C" NOT NULL,
    target      TEXT COLLATE "C" NOT NULL,
    outcome     TEXT COLLATE "C" NOT NULL,
    latency_us  BIGINT NOT NULL,
    request_id  TEXT COLLATE "C" NOT NULL,
    transport   TEXT COLLATE "C" NOT NULL,
    proxy_id    TEXT COLLATE "C" NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX call_events_by_workspace ON call_events(workspace, time_ms);
