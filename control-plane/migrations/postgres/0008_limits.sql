-- Schema version 8: rate budgets. A workspace's limits (the whole workspace, each
-- token, open streams per token) and a token's own limits, as the JSON the proxies'
-- config carries (`WorkspaceLimits`, `RateLimit`); NULL: none.
ALTER TABLE workspaces ADD COLUMN limits TEXT;
ALTER TABLE workspace_tokens ADD COLUMN limits TEXT;
