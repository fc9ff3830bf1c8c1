-- Schema version 12: how a workspace shapes an upstream tool for its clients, one row
-- per (server, upstream tool name), `shape` the JSON of `ToolOverride` (name,
-- description, extend_description, fixed_arguments, annotations). Removed with the
-- server.
CREATE TABLE tool_overrides (
    server_id TEXT NOT NULL REFERENCES servers(id),
    tool TEXT NOT NULL,
    shape TEXT NOT NULL,
    PRIMARY KEY (server_id, tool)
);
