-- Schema version 9: MCP servers Gatehouse hosts itself (transport `stdio`). Such a
-- server has no URL of its own (`url` is empty): the runner starts `command` with
-- `args` (a JSON array of strings) and `env` (a JSON object of plain values; the
-- server's secrets, sealed in `secrets`, are added to it when the process starts),
-- and proxies reach it through the runner's Streamable HTTP endpoint. NULL for every
-- other transport.
ALTER TABLE servers ADD COLUMN command TEXT;
ALTER TABLE servers ADD COLUMN args TEXT;
ALTER TABLE servers ADD COLUMN env TEXT;
