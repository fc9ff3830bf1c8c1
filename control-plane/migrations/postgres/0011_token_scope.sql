-- Schema version 11: the tools a token may see and call, as the JSON of `TokenScope`
-- (tools: globs over exposed names, read_only); NULL: every tool of its workspace.
ALTER TABLE workspace_tokens ADD COLUMN scope TEXT;
